// Package file is the standalone policy source: policies from a YAML file or
// directory and workloads from a workloads file (docs/design.md §3), loaded into a
// policy.Store and reloaded when the files change.
//
// A reload never loses what is in force: an object that fails to decode or
// validate keeps its previous version (if any) and is reported; objects that
// disappeared from the files are deleted.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// Source keeps a Store in sync with policy and workload files.
type Source struct {
	store     *policy.Store
	policies  string
	workloads string
	log       *slog.Logger

	mu sync.Mutex
	// loaded maps each policy in the store to the hash of its document.
	loaded map[policy.PolicyRef]string
	// pods are the workloads loaded from the workloads file.
	pods map[policy.WorkloadKey]bool
	nss  map[string]bool
	// stamp is the fingerprint of the files at the last load.
	stamp  string
	errors []error
}

// New returns a source for the policy path (file or directory; may be empty)
// and the workloads file (may be empty).
func New(store *policy.Store, policies, workloads string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{store: store, policies: policies, workloads: workloads, log: log,
		loaded: map[policy.PolicyRef]string{}, pods: map[policy.WorkloadKey]bool{}, nss: map[string]bool{}}
}

// Errors returns the problems of the last load (invalid objects, unreadable files).
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errors...)
}

// Load reads the files and brings the store in line with them. It returns
// whether the store changed, and an error joining every problem found; valid
// objects are applied even when others are invalid.
func (s *Source) Load() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamp, err := s.fingerprint()
	if err == nil && stamp == s.stamp {
		return false, errors.Join(s.errors...)
	}
	s.stamp = stamp
	var errs []error
	changed := false
	if s.workloads != "" {
		ws, err := manifest.LoadWorkloads(s.workloads)
		if err != nil {
			errs = append(errs, err)
		} else {
			c, err := s.syncWorkloads(ws)
			changed = changed || c
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.policies != "" {
		objs, err := manifest.DecodePath(s.policies)
		if err != nil {
			errs = append(errs, err)
		}
		// A file that did not decode must not delete its policies: only
		// delete what is missing when every file decoded.
		complete := err == nil
		c, err := s.syncPolicies(objs, complete)
		changed = changed || c
		if err != nil {
			errs = append(errs, err)
		}
	}
	s.errors = errs
	return changed, errors.Join(errs...)
}

func (s *Source) syncWorkloads(ws *policy.Workloads) (bool, error) {
	var errs []error
	changed := false
	nss := map[string]bool{}
	for _, ns := range ws.Namespaces {
		if err := s.store.UpsertNamespace(ns); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.workloads, err))
			continue
		}
		nss[ns.Name] = true
		changed = true
	}
	for name := range s.nss {
		if !nss[name] {
			s.store.DeleteNamespace(name)
			changed = true
		}
	}
	s.nss = nss
	pods := map[policy.WorkloadKey]bool{}
	// Delete first so that an address moving between pods is not a conflict.
	want := map[policy.WorkloadKey]bool{}
	for _, p := range ws.Pods {
		want[p.Key()] = true
	}
	for k := range s.pods {
		if !want[k] {
			s.store.DeleteWorkload(k)
			changed = true
		}
	}
	for _, p := range ws.Pods {
		if old, ok := s.store.Workload(p.Key()); ok && sameWorkload(old, p) {
			pods[p.Key()] = true
			continue
		}
		if err := s.store.UpsertWorkload(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.workloads, err))
			continue
		}
		pods[p.Key()] = true
		changed = true
	}
	s.pods = pods
	return changed, errors.Join(errs...)
}

func sameWorkload(a, b policy.Workload) bool {
	return reflect.DeepEqual(a, normalizeIPs(b))
}

func normalizeIPs(w policy.Workload) policy.Workload {
	for i, ip := range w.IPs {
		w.IPs[i] = ip.Unmap()
	}
	return w
}

func (s *Source) syncPolicies(objs []manifest.Object, complete bool) (bool, error) {
	var errs []error
	changed := false
	seen := map[policy.PolicyRef]bool{}
	for i := range objs {
		o := &objs[i]
		ref := o.Ref()
		if seen[ref] {
			errs = append(errs, fmt.Errorf("%s: %s defined twice; the first definition is used", o.Source, ref))
			continue
		}
		seen[ref] = true
		h := hashObject(o)
		if s.loaded[ref] == h {
			continue
		}
		if err := o.Apply(s.store); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.Source, err))
			if _, ok := s.loaded[ref]; ok {
				s.log.Warn("invalid policy update rejected; previous version stays in force", "policy", ref.String(), "err", err)
			}
			continue
		}
		s.loaded[ref] = h
		changed = true
	}
	if complete {
		for ref := range s.loaded {
			if !seen[ref] {
				s.store.DeletePolicy(ref)
				delete(s.loaded, ref)
				changed = true
			}
		}
	}
	return changed, errors.Join(errs...)
}

func hashObject(o *manifest.Object) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#v|%#v|%#v", o.FirewallPolicy, o.ClusterFirewallPolicy, o.NetworkPolicy)
	return string(h.Sum(nil))
}

// fingerprint summarizes names, sizes and modification times of the files.
func (s *Source) fingerprint() (string, error) {
	h := sha256.New()
	var files []string
	for _, root := range []string{s.policies, s.workloads} {
		if root == "" {
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	sort.Strings(files)
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s|%d|%d\n", f, st.Size(), st.ModTime().UnixNano())
	}
	return string(h.Sum(nil)), nil
}

// Watch reloads the files every interval until ctx ends, calling onChange after
// each load that changed the store.
func (s *Source) Watch(ctx context.Context, interval time.Duration, onChange func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := s.Load()
		if err != nil {
			s.log.Warn("policy files have problems", "err", err)
		}
		if changed && onChange != nil {
			onChange()
		}
	}
}
