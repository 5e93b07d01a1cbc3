package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LoadState reads the State a Start recorded in dir.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return &s, nil
}

// Stop tears the cluster down (see State.Teardown).
func (c *Cluster) Stop() error { return c.State.Teardown() }

// Teardown kills every process of the cluster (the recorded daemons, everything in
// the node's cgroups, mount and network namespaces: containers, shims), removes the
// cgroup directories and the network namespaces. The node's mounts lived in the
// anchor's private mount namespace and go with it. The state directory is left for
// the caller to remove (its logs may be wanted). It is safe to call more than once.
func (s *State) Teardown() error {
	var errs []error
	nsInodes := map[string]bool{}
	for _, n := range []string{s.NodeNS, s.ExtNS} {
		if n == "" {
			continue
		}
		if ino, err := nsInode("/run/netns/" + n); err == nil {
			nsInodes[ino] = true
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; ; round++ {
		victims := s.processes(nsInodes)
		if len(victims) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes still running after 30s: %v", victims))
			break
		}
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.CgroupRoot != "" && s.CgroupRoot != "/" {
		if err := removeCgroups(s.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range []string{s.NodeNS, s.ExtNS} {
		if n == "" {
			continue
		}
		if _, err := os.Stat("/run/netns/" + n); err != nil {
			continue
		}
		if _, err := run(context.Background(), "ip", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// processes lists the live processes of the cluster: the recorded ones whose
// executable still matches, and every process in the anchor's mount namespace, in the
// node's or the external network namespace, or in a cgroup under CgroupRoot.
func (s *State) processes(nsInodes map[string]bool) []int {
	var pids []int
	add := func(pid int) {
		if pid > 1 && pid != os.Getpid() && processAlive(pid) && !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	for _, p := range s.Procs {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID)); err == nil && sameExe(exe, p.Exe) {
			add(p.PID)
		}
	}
	if s.AnchorPID > 0 && s.AnchorMntNS != "" {
		if mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", s.AnchorPID)); mnt == s.AnchorMntNS {
			add(s.AnchorPID)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s.AnchorMntNS != "" {
			if mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); mnt == s.AnchorMntNS {
				add(pid)
				continue
			}
		}
		if len(nsInodes) > 0 {
			if net, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); nsInodes[net] {
				add(pid)
				continue
			}
		}
	}
	if s.CgroupRoot != "" && s.CgroupRoot != "/" {
		hs, _ := cgroupHierarchies()
		for _, h := range hs {
			_ = filepath.WalkDir(filepath.Join(h, s.CgroupRoot), func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						add(pid)
					}
				}
				return nil
			})
		}
	}
	return pids
}

// sameExe: /proc/PID/exe of a deleted or replaced binary reads "PATH (deleted)".
func sameExe(exe, want string) bool {
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe == want {
		return true
	}
	if r, err := filepath.EvalSymlinks(want); err == nil && r == exe {
		return true
	}
	return false
}

// nsInode returns the identity of a namespace file as /proc/PID/ns/net shows it.
func nsInode(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("net:[%d]", st.Ino), nil
}

// removeCgroups removes root and every directory under it, deepest first, in every
// hierarchy (a cgroup whose last task just died may be busy for a moment).
func removeCgroups(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		top := filepath.Join(h, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			var err error
			for range 50 {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
