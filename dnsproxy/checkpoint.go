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

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// CheckpointVersion is the format version of Checkpoint. Version 1 (the
// name → IP state without the cache) is still read.
const CheckpointVersion = 2

// CheckpointFormat names the format in every checkpoint file, so that a file
// that is not a resolver checkpoint is recognised as foreign.
const CheckpointFormat = "egressd.dnsproxy.checkpoint"

// MaxCheckpointFile is the largest checkpoint file ReadCheckpoint accepts.
const MaxCheckpointFile = 256 << 20

// Checkpoint is the resolver state a new process takes over from the old one
// (the agent's --state-file): every address handed to a workload for a name,
// with the time its kernel set entry expires, and the answer cache.
type Checkpoint struct {
	Format  string            `json:"format,omitempty"` // CheckpointFormat (absent in version 1)
	Version int               `json:"version"`
	Written time.Time         `json:"written"`
	PID     int               `json:"pid"`
	Entries []CheckpointEntry `json:"entries"`
	// Cache holds the cached answers, least recently used first (version 2).
	Cache []CachedAnswer `json:"cache,omitempty"`
}

// CachedAnswer is one cached answer (positive or negative) in a checkpoint.
type CachedAnswer struct {
	// Msg is the answer as stored: packed, TTLs as clamped when it was cached.
	Msg []byte `json:"msg"`
	// Flags are the query flags of the cache key: 1 RD, 2 CD, 4 DO.
	Flags uint8 `json:"flags"`
	// Stored is when the answer was cached (its TTLs count down from then);
	// Expires is when it stops being fresh (absolute). An expired answer is
	// only in a checkpoint while serve-stale may still serve it.
	Stored  time.Time `json:"stored"`
	Expires time.Time `json:"expires"`
}

// CheckpointEntry is one (workload, name, address) with its expiry.
type CheckpointEntry struct {
	Workload string     `json:"workload"` // "namespace/name"
	Name     string     `json:"name"`
	IP       netip.Addr `json:"ip"`
	Expires  time.Time  `json:"expires"`
	// Via are the alias chain links (CNAME/DNAME names) the address was
	// answered through; Restore decides them again. Absent when the answer
	// had no alias, and in checkpoints of releases before chain decisions.
	Via []string `json:"via,omitempty"`
}

// Checkpoint returns the current name → IP state and the answer cache (at
// most Config.CheckpointCacheBytes of packed answers, the most recently used
// ones; stale answers only with serve-stale).
func (srv *Server) Checkpoint() Checkpoint {
	now := srv.now()
	cp := Checkpoint{Format: CheckpointFormat, Version: CheckpointVersion, Written: now.UTC(), PID: os.Getpid()}
	for _, t := range srv.Tracked() {
		cp.Entries = append(cp.Entries, CheckpointEntry{t.Workload.String(), t.Name, t.IP, t.Expires.UTC(), t.Via})
	}
	cp.Cache = srv.cache.snapshot(now, srv.s.CheckpointCacheBytes)
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
	if len(b) > MaxCheckpointFile {
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: %d bytes, more than the %d accepted", path, len(b), MaxCheckpointFile)
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: not a checkpoint (corrupt?): %w", path, err)
	}
	switch {
	case cp.Version == 1 && cp.Format == "" && len(cp.Cache) == 0:
		// the name → IP state of a previous release
	case cp.Format != CheckpointFormat:
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: format %q, want %q (not a resolver checkpoint)", path, cp.Format, CheckpointFormat)
	case cp.Version != CheckpointVersion:
		return Checkpoint{}, fmt.Errorf("dnsproxy: checkpoint %s: version %d, want %d or 1", path, cp.Version, CheckpointVersion)
	}
	return cp, nil
}

// restoreBatch bounds the set elements of one kernel write of Restore.
const restoreBatch = 8192

// Restore takes over the state of a checkpoint (call it before or after
// Start; entries may be restored more than once): every entry that has not
// expired, of a workload that still exists, whose alias chain (Via) no
// Deny rule now matches (Engine.DecideChain) and whose address rebinding
// protection does not drop (rebind.go), is tracked again (within the
// bounds MaxIPsPerName and MaxElementsPerWorkload: a checkpoint holding more
// restores the oldest answers of each name first, the rest is counted as
// refused), recorded in the reference model (Deps.RecordLookup) and — when
// the name is still allowed — written again into the kernel sets of the rules
// that allow it now, with the time it has left (the entries usually survived
// in the kernel; this covers a table that was recreated). The writes are
// grouped per set, in Applies of at most restoreBatch elements. It returns
// the number of entries restored. The cached answers are restored separately
// (RestoreCache).
func (srv *Server) Restore(ctx context.Context, cp Checkpoint) (int, error) {
	now := srv.now()
	writes := setBatch{bySet: map[string][]ipset.Element{}}
	n := 0
	for _, e := range cp.Entries {
		key, w, ok := srv.restorable(e, now)
		if !ok {
			continue
		}
		// The same set operations as an answer's (program.go), with the time
		// the entry has left.
		ip := e.IP.Unmap()
		var ops []ipset.Op
		elems := 0
		if srv.deps.Sets != nil && srv.deps.Engine != nil {
			srcs := sourcesOf(&w)
			var rules []policy.RuleRef
			if len(srcs[family(ip)]) > 0 {
				rules = srv.deps.Engine.FQDNRules(key, e.Name)
			}
			left := max(e.Expires.Sub(now).Round(time.Second), time.Second)
			ops, elems = srv.setOps(rules, srcs, []answerAddr{{ip: ip}}, func(answerAddr) time.Duration { return left })
		}
		g := srv.track.admit(key, e.Name, e.Via, []netip.Addr{ip}, []time.Time{e.Expires}, []int{elems}, now)
		if !g.ok[0] {
			srv.st.overName.Add(uint64(g.overName))
			srv.st.overWorkload.Add(uint64(g.overWorkload))
			continue
		}
		if srv.deps.RecordLookup != nil {
			srv.deps.RecordLookup(key, e.Name, []netip.Addr{ip}, e.Expires)
		}
		n++
		writes.add(ops)
	}
	return n, writes.apply(ctx, srv.deps.Sets)
}

// restorable reports whether a checkpoint entry may be restored: it has not
// expired, its workload still exists (without an engine: any key), no Deny
// rule now matches its alias chain and rebinding protection does not drop
// its address. It returns the workload.
func (srv *Server) restorable(e CheckpointEntry, now time.Time) (policy.WorkloadKey, policy.Workload, bool) {
	var w policy.Workload
	if !e.Expires.After(now) || !e.IP.IsValid() {
		return policy.WorkloadKey{}, w, false
	}
	key, err := policy.ParseWorkloadKey(e.Workload)
	if err != nil {
		return key, w, false
	}
	if eng := srv.deps.Engine; eng != nil {
		var ok bool
		if w, ok = eng.Store().Workload(key); !ok {
			return key, w, false // gone while we were away
		}
		if len(e.Via) > 0 {
			if d := eng.DecideChain(eng.DecideLookup(key, e.Name), e.Via); d.Blocked() && d.Via != "" {
				return key, w, false // reached through a name a Deny rule now matches
			}
		}
	}
	if srv.s.rebindRange(e.IP.Unmap(), srv.clusterName(e.Name)) != "" {
		return key, w, false // rebinding protection drops it from answers now (rebind.go)
	}
	return key, w, true
}

// setBatch gathers set elements per set, in order of first use, for Restore.
type setBatch struct {
	sets  []string
	bySet map[string][]ipset.Element
}

// add takes the elements of ops.
func (b *setBatch) add(ops []ipset.Op) {
	for _, op := range ops {
		if _, ok := b.bySet[op.Set]; !ok {
			b.sets = append(b.sets, op.Set)
		}
		b.bySet[op.Set] = append(b.bySet[op.Set], op.Elements...)
	}
}

// apply writes the elements, set by set, in Applies of at most restoreBatch
// elements.
func (b *setBatch) apply(ctx context.Context, m ipset.Manager) error {
	var ops []ipset.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := m.Apply(ctx, ops...)
		ops, size = ops[:0], 0
		if err != nil {
			return fmt.Errorf("dnsproxy: restore kernel sets: %w", err)
		}
		return nil
	}
	for _, name := range b.sets {
		elems := b.bySet[name]
		for len(elems) > 0 {
			k := min(len(elems), restoreBatch-size)
			ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: name, Elements: elems[:k]})
			elems, size = elems[k:], size+k
			if size >= restoreBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// RestoreCache puts the cached answers of a checkpoint back into the cache,
// with the TTLs they have left (an answer cached 20s ago with TTL 60 is served
// with TTL 40): answers that expired (beyond the serve-stale window), that do
// not parse or whose question is not a plain IN question are dropped, and an
// answer cached since by this process is kept. TTLs are clamped again with
// this process's settings. It returns the number of answers restored.
func (srv *Server) RestoreCache(cp Checkpoint) int {
	now := srv.now()
	n := 0
	for _, ca := range cp.Cache {
		m := new(dns.Msg)
		if err := m.Unpack(ca.Msg); err != nil || !m.Response || len(m.Question) != 1 ||
			m.Question[0].Qclass != dns.ClassINET || ca.Flags > 7 || ca.Stored.After(now) {
			continue
		}
		srv.capAnswer(context.Background(), nil, m) // limits.go: a checkpoint of an older release
		key := cacheKey(m.Question[0], ca.Flags&1 != 0, ca.Flags&2 != 0, ca.Flags&4 != 0)
		minimize(m, ca.Flags&4 != 0) // a checkpoint of an older release may carry NS and glue
		if srv.cache.restore(key, m, ca.Stored, ca.Expires, now) {
			n++
		}
	}
	return n
}
