package dnsproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// CheckpointVersion is the format version of Checkpoint.
const CheckpointVersion = 1

// Checkpoint is the resolver state a new process takes over from the old one
// (the agent's --state-file): every address handed to a workload for a name,
// with the time its kernel set entry expires.
type Checkpoint struct {
	Version int               `json:"version"`
	Written time.Time         `json:"written"`
	PID     int               `json:"pid"`
	Entries []CheckpointEntry `json:"entries"`
}

// CheckpointEntry is one (workload, name, address) with its expiry.
type CheckpointEntry struct {
	Workload string     `json:"workload"` // "namespace/name"
	Name     string     `json:"name"`
	IP       netip.Addr `json:"ip"`
	Expires  time.Time  `json:"expires"`
}

// Checkpoint returns the current name → IP state.
func (srv *Server) Checkpoint() Checkpoint {
	cp := Checkpoint{Version: CheckpointVersion, Written: srv.now().UTC(), PID: os.Getpid()}
	for _, t := range srv.Tracked() {
		cp.Entries = append(cp.Entries, CheckpointEntry{t.Workload.String(), t.Name, t.IP, t.Expires.UTC()})
	}
	return cp
}

// WriteCheckpoint writes cp to path atomically: a temporary file in the same
// directory, synced, then renamed over path. Several processes may write the
// same path (each uses its own temporary file).
func WriteCheckpoint(path string, cp Checkpoint) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("dnsproxy: checkpoint %s: %w", path, err)
	}
	return nil
}

// ReadCheckpoint reads a checkpoint file; a missing file is an empty
// checkpoint.
func ReadCheckpoint(path string) (Checkpoint, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{Version: CheckpointVersion}, nil
	}
	if err != nil {
		return Checkpoint{}, err
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: %w", path, err)
	}
	if cp.Version != CheckpointVersion {
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: version %d, want %d", path, cp.Version, CheckpointVersion)
	}
	return cp, nil
}

// Restore takes over the state of a checkpoint (call it before or after
// Start; entries may be restored more than once): every entry that has not
// expired, of a workload that still exists, is tracked again, recorded in the
// reference model (Deps.RecordLookup) and — when the name is still allowed —
// written again into the kernel sets of the rules that allow it now, with the
// time it has left (the entries usually survived in the kernel; this covers a
// table that was recreated). It returns the number of entries restored.
func (srv *Server) Restore(ctx context.Context, cp Checkpoint) (int, error) {
	now := srv.now()
	var ops []ipset.Op
	n := 0
	for _, e := range cp.Entries {
		left := e.Expires.Sub(now)
		if left <= 0 || !e.IP.IsValid() {
			continue
		}
		key, err := policy.ParseWorkloadKey(e.Workload)
		if err != nil {
			continue
		}
		var w policy.Workload
		if srv.deps.Engine != nil {
			var ok bool
			if w, ok = srv.deps.Engine.Store().Workload(key); !ok {
				continue // gone while we were away
			}
		}
		ip := e.IP.Unmap()
		srv.track.record(key, e.Name, []netip.Addr{ip}, []time.Time{e.Expires})
		if srv.deps.RecordLookup != nil {
			srv.deps.RecordLookup(key, e.Name, []netip.Addr{ip})
		}
		n++
		if srv.deps.Sets == nil || srv.deps.Engine == nil {
			continue
		}
		fam := ipset.IPv4
		if !ip.Is4() {
			fam = ipset.IPv6
		}
		timeout := max(left.Round(time.Second), time.Second)
		var elems []ipset.Element
		for _, src := range w.IPs {
			if src = src.Unmap(); src.Is4() == ip.Is4() {
				elems = append(elems, ipset.Pair(src, ip, timeout))
			}
		}
		if len(elems) == 0 {
			continue
		}
		for _, r := range srv.deps.Engine.FQDNRules(key, e.Name) {
			ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: srv.deps.SetNamer(r, fam), Elements: elems})
		}
	}
	if len(ops) > 0 {
		if err := srv.deps.Sets.Apply(ctx, ops...); err != nil {
			return n, fmt.Errorf("dnsproxy: restore kernel sets: %w", err)
		}
	}
	return n, nil
}
