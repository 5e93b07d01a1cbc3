package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"
)

func blockedEvent(i int) event.Event {
	return event.Event{
		Time:      time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC),
		Name:      event.LookupBlocked,
		Workload:  "payments/gateway-0",
		Namespace: "payments",
		Client:    "10.0.1.5",
		QName:     fmt.Sprintf("evil%d.minepool.com.", i),
		QType:     "A",
		Policy:    "deny-mining",
		Rule:      "egress[0]",
		Tier:      "Admin",
		Reason:    "deny-rule",
		Response:  "NXDOMAIN",
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestEventJSONFieldsExactly(t *testing.T) {
	line, err := json.Marshal(blockedEvent(1))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-03-04T05:06:07.123456789Z","event":"dns.lookup.blocked",` +
		`"workload":"payments/gateway-0","namespace":"payments","client":"10.0.1.5",` +
		`"qname":"evil1.minepool.com.","qtype":"A","policy":"deny-mining","rule":"egress[0]",` +
		`"tier":"Admin","reason":"deny-rule","response":"NXDOMAIN"}`
	if string(line) != want {
		t.Fatalf("line\n got %s\nwant %s", line, want)
	}

	tun := event.Event{
		Time:     time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600)),
		Name:     event.TunnelSuspected,
		Client:   "10.0.1.6",
		QName:    "aGVsbG8.t.example.com",
		Domain:   "example.com",
		Score:    0.93,
		Features: map[string]float64{"entropy": 4.1, "label_len": 52},
		Attrs:    map[string]string{"window": "60s"},
	}
	line, err = json.Marshal(tun)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wantKeys := []string{"attrs", "client", "domain", "event", "features", "qname", "score", "time", "workload"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("keys %v, want %v (line %s)", keys, wantKeys, line)
	}
	if m["time"] != "2026-03-04T04:06:07.000000000Z" { // UTC, always with sub-seconds
		t.Errorf("time %v", m["time"])
	}
	if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
		t.Errorf("time not RFC 3339: %v", err)
	}
	if m["workload"] != "" {
		t.Errorf("unknown workload must be present and empty, got %v", m["workload"])
	}
	if m["score"] != 0.93 || m["features"].(map[string]any)["entropy"] != 4.1 {
		t.Errorf("tunnel fields: %s", line)
	}

	// Round trip.
	var back event.Event
	if err := json.Unmarshal(line, &back); err != nil {
		t.Fatal(err)
	}
	tun.Time = tun.Time.UTC()
	if !reflect.DeepEqual(back, tun) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, tun)
	}

	// A tunnel event with score 0 still has the score; NaN does not break the line.
	line, _ = json.Marshal(event.Event{Name: event.TunnelBlocked, Features: map[string]float64{"x": nanf()}})
	if !strings.Contains(string(line), `"score":0`) || !strings.Contains(string(line), `"x":0`) {
		t.Errorf("tunnel with zero score / NaN feature: %s", line)
	}
}

func nanf() float64 { var z float64; return z / z }

func TestAuditLogWritesLinesToFileAndStdout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var out syncBuffer
	a, err := NewAuditLog(AuditOptions{Path: path, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := a.Write(blockedEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 3 {
		t.Fatalf("%d lines after Flush, want 3", len(lines))
	}
	for i, l := range lines {
		var ev event.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if !reflect.DeepEqual(ev, blockedEvent(i)) {
			t.Errorf("line %d = %+v", i, ev)
		}
	}
	if got := out.String(); got != strings.Join(lines, "\n")+"\n" {
		t.Errorf("stdout differs from file:\n%s", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(blockedEvent(9)); !errors.Is(err, ErrAuditClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if a.Dropped() != 1 {
		t.Errorf("Dropped = %d, want 1", a.Dropped())
	}
}

func TestAuditLogFlushesPromptlyWithoutFlushCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAuditLog(AuditOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Write(blockedEvent(0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(readLines(t, path)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("line not on disk within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAuditLogConcurrentWritersNeverInterleave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	var out syncBuffer
	a, err := NewAuditLog(AuditOptions{Path: path, Stdout: &out, QueueSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := blockedEvent(w*each + i)
				ev.Attrs = map[string]string{"pad": strings.Repeat("x", 200+i%300)}
				if err := a.Write(ev); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Rotate and flush concurrently with the writers.
	for range 5 {
		if err := a.Reopen(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d (dropped %d)", len(lines), writers*each, a.Dropped())
	}
	seen := map[string]bool{}
	for i, l := range lines {
		var ev event.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d is not one JSON object: %v\n%.200s", i, err, l)
		}
		if seen[ev.QName] {
			t.Fatalf("duplicate %s", ev.QName)
		}
		seen[ev.QName] = true
	}
	if n := strings.Count(out.String(), "\n"); n != writers*each {
		t.Errorf("stdout has %d lines", n)
	}
	if a.Written() != writers*each || a.Dropped() != 0 {
		t.Errorf("written %d dropped %d", a.Written(), a.Dropped())
	}
}

// blockingWriter blocks every Write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestAuditLogDropsWhenFullInsteadOfBlocking(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	drops := 0
	var mu sync.Mutex
	a, err := NewAuditLog(AuditOptions{Stdout: w, QueueSize: 4, OnDrop: func() { mu.Lock(); drops++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	// The writer takes one line and then blocks on the stuck output (after its bufio
	// buffer fills or at flush); the queue then fills up and further lines are dropped.
	start := time.Now()
	const n = 1000
	full := 0
	for i := range n {
		ev := blockedEvent(i)
		ev.Attrs = map[string]string{"pad": strings.Repeat("y", 1000)}
		if err := a.Write(ev); errors.Is(err, ErrAuditFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writes blocked for %v", d)
	}
	if full == 0 || uint64(full) != a.Dropped() {
		t.Fatalf("full=%d dropped=%d, want >0 and equal", full, a.Dropped())
	}
	mu.Lock()
	if drops != full {
		t.Errorf("OnDrop called %d times, want %d", drops, full)
	}
	mu.Unlock()
	close(w.release)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Count(w.buf.String(), "\n")
	if got+full != n {
		t.Errorf("written %d + dropped %d != %d", got, full, n)
	}
	t.Logf("written %d, dropped %d", got, full)
}

func TestAuditLogReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := NewAuditLog(AuditOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	a.Write(blockedEvent(1))
	a.Write(blockedEvent(2))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	a.Write(blockedEvent(3)) // still goes to the renamed file (same open fd)
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	a.Write(blockedEvent(4))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if old := readLines(t, rotated); len(old) != 3 {
		t.Errorf("rotated file has %d lines, want 3", len(old))
	}
	cur := readLines(t, path)
	if len(cur) != 1 || !strings.Contains(cur[0], "evil4.") {
		t.Errorf("new file: %q", cur)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}

	// Reopen failing (directory gone) keeps writing to the old file.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	a2, err := NewAuditLog(AuditOptions{Path: filepath.Join(sub, "a.log")})
	if err != nil {
		t.Fatal(err)
	}
	a2.Write(blockedEvent(1))
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(sub, moved); err != nil {
		t.Fatal(err)
	}
	if err := a2.Reopen(); err == nil {
		t.Fatal("Reopen into a missing directory succeeded")
	}
	a2.Write(blockedEvent(2))
	a2.Close()
	if n := len(readLines(t, filepath.Join(moved, "a.log"))); n != 2 {
		t.Errorf("old file has %d lines after failed Reopen, want 2", n)
	}
	if _, err := NewAuditLog(AuditOptions{Path: filepath.Join(dir, "nope", "a.log")}); err == nil {
		t.Error("opening under a missing directory succeeded")
	}
}

func TestAuditLogCloseIdempotentAndFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := NewAuditLog(AuditOptions{Path: path, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		a.Write(blockedEvent(i))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, path)); n != 100 {
		t.Errorf("%d lines after Close", n)
	}
	if err := a.Reopen(); !errors.Is(err, ErrAuditClosed) {
		t.Errorf("Reopen after Close: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)
