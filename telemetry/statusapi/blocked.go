package statusapi

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/telemetry/event"
)

// BlockedRingSize bounds the blocked lookups a BlockedRing remembers.
const BlockedRingSize = 4096

// UnknownClient is the workload key of blocked lookups from a source that is
// no known workload.
const UnknownClient = "(unknown client)"

// blockedLookup is one blocked lookup remembered by a BlockedRing.
type blockedLookup struct {
	at             time.Time
	workload, name string
}

// BlockedRing keeps the last BlockedRingSize blocked lookups for /status
// (bounded whatever the traffic). The zero value is ready; it is safe for
// concurrent use.
type BlockedRing struct {
	mu    sync.Mutex
	buf   []blockedLookup
	next  int
	total uint64
}

// Add remembers a lookup of name by workload ("" for an unknown client)
// blocked at at, replacing the oldest once the ring is full.
func (r *BlockedRing) Add(at time.Time, workload, name string) {
	b := blockedLookup{at: at, workload: workload, name: name}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < BlockedRingSize {
		r.buf = append(r.buf, b)
	} else {
		r.buf[r.next] = b
		r.next = (r.next + 1) % BlockedRingSize
	}
	r.total++
}

// Emit remembers the blocked lookups among events (dns.lookup.blocked, and
// dns.tunnel.blocked: lookups refused by a tunnel quarantine); other events
// are ignored. The ring is the /status event sink.
func (r *BlockedRing) Emit(_ context.Context, ev event.Event) {
	if ev.Name == event.LookupBlocked || ev.Name == event.TunnelBlocked {
		r.Add(ev.Time, ev.Workload, strings.TrimSuffix(ev.QName, "."))
	}
}

var _ event.Sink = (*BlockedRing)(nil)

// Since summarises the lookups blocked at or after t, with the top names and
// workloads (at most top of each).
func (r *BlockedRing) Since(t time.Time, top int) BlockedStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := BlockedStatus{Since: t, Total: r.total, TopNames: []Counted{}, TopWorkloads: []Counted{}}
	names, wls := map[string]int{}, map[string]int{}
	oldest := time.Time{}
	for i, b := range r.buf {
		if i == 0 || b.at.Before(oldest) {
			oldest = b.at
		}
		if b.at.Before(t) {
			continue
		}
		st.Count++
		names[b.name]++
		wl := b.workload
		if wl == "" {
			wl = UnknownClient
		}
		wls[wl]++
	}
	st.Truncated = len(r.buf) == BlockedRingSize && oldest.After(t)
	st.TopNames, st.TopWorkloads = topN(names, top), topN(wls, top)
	return st
}

// topN returns the n keys of m with the highest counts, highest first, ties
// by key.
func topN(m map[string]int, n int) []Counted {
	out := make([]Counted, 0, len(m))
	for k, v := range m {
		out = append(out, Counted{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
