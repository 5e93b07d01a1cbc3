package dnsproxy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// cpUpstream answers pos.example A (TTL 60), short.example A (TTL 5) and
// NXDOMAIN with an SOA (negative TTL 30) for everything else.
func cpUpstream(w dns.ResponseWriter, q *dns.Msg) {
	r := new(dns.Msg)
	r.SetReply(q)
	name := strings.ToLower(q.Question[0].Name)
	a := func(ip string, ttl uint32) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
	}
	switch {
	case name == "pos.example." && q.Question[0].Qtype == dns.TypeA:
		r.Answer = []dns.RR{a("192.0.2.60", 60)}
	case name == "short.example." && q.Question[0].Qtype == dns.TypeA:
		r.Answer = []dns.RR{a("192.0.2.5", 5)}
	default:
		r.Rcode = dns.RcodeNameError
		r.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 30},
			Ns: "ns.example.", Mbox: "admin.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 30}}
	}
	w.WriteMsg(r)
}

// TestCacheCheckpointRestoredWithRemainingTTLs: positive, negative and stale
// answers written to a checkpoint file by one resolver are served by another
// one that has no working upstream, with the TTLs they have left; expired
// ones are dropped.
func TestCacheCheckpointRestoredWithRemainingTTLs(t *testing.T) {
	up := startFakeUpstream(t, cpUpstream)
	stale := func(c *Config, _ *Deps) {
		c.ServeStale, c.StaleTTL = time.Hour, 30*time.Second
		c.Timeout, c.QueryTimeout = 200*time.Millisecond, 400*time.Millisecond
	}
	old := start(t, []string{up.addr}, stale)
	for _, n := range []string{"pos.example", "short.example", "nx.example"} {
		old.query(t, unknownIP, "udp", n, dns.TypeA, false)
	}
	old.clock.Advance(10 * time.Second) // short.example is stale now, the others have 50s and 20s left
	path := filepath.Join(t.TempDir(), "state.json")
	if err := WriteCheckpoint(path, old.srv.Checkpoint()); err != nil {
		t.Fatal(err)
	}
	cp, err := ReadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Version != CheckpointVersion || cp.Format != CheckpointFormat || len(cp.Cache) != 3 {
		t.Fatalf("checkpoint: version %d format %q, %d cached answers", cp.Version, cp.Format, len(cp.Cache))
	}

	// The successor: same time, no upstream answers.
	next := start(t, []string{blackhole(t)}, stale)
	next.clock.Advance(10 * time.Second)
	if n := next.srv.RestoreCache(cp); n != 3 {
		t.Fatalf("restored %d answers, want 3", n)
	}
	r := next.query(t, unknownIP, "udp", "pos.example", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(ttls(r), []uint32{50}) {
		t.Fatalf("restored positive answer: %v", r)
	}
	r = next.query(t, unknownIP, "udp", "nx.example", dns.TypeA, false)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 20 {
		t.Fatalf("restored negative answer: %v", r)
	}
	r = next.query(t, unknownIP, "udp", "short.example", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(ttls(r), []uint32{30}) {
		t.Fatalf("restored stale answer (served stale, upstream down): %v", r)
	}
	if st := next.srv.Stats(); st.CacheHits != 2 || st.StaleServed != 1 {
		t.Errorf("stats %+v", st)
	}

	// Restored again later: what expired meanwhile is dropped.
	later := start(t, []string{blackhole(t)}, func(c *Config, d *Deps) { c.ServeStale = 0 })
	later.clock.Advance(40 * time.Second) // pos has 20s left; nx expired 10s ago; short long ago
	if n := later.srv.RestoreCache(cp); n != 1 || later.srv.CacheLen() != 1 {
		t.Fatalf("restored %d (cache %d) 40s later without serve-stale, want only pos.example", n, later.srv.CacheLen())
	}
	if r := later.query(t, unknownIP, "udp", "pos.example", dns.TypeA, false); !slices.Equal(ttls(r), []uint32{20}) {
		t.Fatalf("pos.example 40s later: %v", r)
	}
	// A fresher answer of the process is not replaced by an older one.
	if n := later.srv.RestoreCache(cp); n != 0 {
		t.Errorf("restoring twice replaced %d answers", n)
	}
}

// TestCacheCheckpointBounded: the cache part of a checkpoint holds the most
// recently used answers that fit in CheckpointCacheBytes.
func TestCacheCheckpointBounded(t *testing.T) {
	up := startFakeUpstream(t, cpUpstream)
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.CheckpointCacheBytes = 250 })
	h.query(t, unknownIP, "udp", "pos.example", dns.TypeA, false)
	h.query(t, unknownIP, "udp", "nx.example", dns.TypeA, false)
	cp := h.srv.Checkpoint()
	if len(cp.Cache) != 1 {
		t.Fatalf("%d answers in a 250-byte budget, want 1", len(cp.Cache))
	}
	m := new(dns.Msg)
	if err := m.Unpack(cp.Cache[0].Msg); err != nil || m.Question[0].Name != "nx.example." {
		t.Fatalf("kept %v (%v), want the most recent, nx.example", m.Question, err)
	}
	none := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.CheckpointCacheBytes = -1 })
	none.query(t, unknownIP, "udp", "pos.example", dns.TypeA, false)
	if cp := none.srv.Checkpoint(); len(cp.Cache) != 0 {
		t.Errorf("CheckpointCacheBytes -1 checkpointed %d answers", len(cp.Cache))
	}
}

// TestReadCheckpointRejectsCorruptAndForeignFiles: a damaged file, a JSON file
// that is not a resolver checkpoint and a future version are errors (the
// agent logs them and starts cold); a version 1 file is still read.
func TestReadCheckpointRejectsCorruptAndForeignFiles(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ content, err string }{
		"truncated": {`{"format":"egressd.dnsproxy.checkpoint","version":2,"entries":[{"workl`, "not a checkpoint"},
		"garbage":   {"\x00\x01binary", "not a checkpoint"},
		"foreign":   {`{"apiVersion":"v1","kind":"ConfigMap"}`, "not a resolver checkpoint"},
		"future":    {`{"format":"egressd.dnsproxy.checkpoint","version":3}`, "version 3"},
		"v1":        {`{"version":1,"written":"2024-01-01T00:00:00Z","pid":1,"entries":[]}`, ""},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadCheckpoint(p)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one containing %q", name, err, c.err)
		}
	}
	// A cached answer that does not parse is skipped, the others restored.
	up := startFakeUpstream(t, cpUpstream)
	h := start(t, []string{up.addr}, nil)
	h.query(t, unknownIP, "udp", "pos.example", dns.TypeA, false)
	cp := h.srv.Checkpoint()
	cp.Cache = append(cp.Cache, CachedAnswer{Msg: []byte{1, 2, 3}, Stored: cp.Written, Expires: cp.Written.Add(time.Minute)})
	next := start(t, []string{up.addr}, nil)
	if n := next.srv.RestoreCache(cp); n != 1 || next.srv.CacheLen() != 1 {
		t.Fatalf("restored %d answers, cache %d", n, next.srv.CacheLen())
	}
}
