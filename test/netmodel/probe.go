package netmodel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Protocol of a probe.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Family of a probe's addresses.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Defaults of Prober.
const (
	DefaultProbeTimeout = 400 * time.Millisecond
	DefaultWorkers      = 64
)

// Prober opens real connections from inside pod namespaces. The zero value is usable.
type Prober struct {
	// Timeout of one probe when the caller passes 0 (Matrix always uses it); default
	// 400ms. A TCP probe must connect and read the banner within it; a UDP probe sends,
	// waits half of it for the answer, and sends once more.
	Timeout time.Duration
	// Workers bounds the probes Matrix runs at once (default 64).
	Workers int
	// Recheck makes Matrix probe every cell that failed once more, sequentially per
	// worker, to rule out a loaded machine (costs one more timeout per denied cell).
	Recheck bool
}

func (pr *Prober) timeout(t time.Duration) time.Duration {
	if t > 0 {
		return t
	}
	if pr != nil && pr.Timeout > 0 {
		return pr.Timeout
	}
	return DefaultProbeTimeout
}

var probeSeq atomic.Uint64

// dial creates the socket inside from's namespace and connects it.
func dial(ctx context.Context, from *Pod, to netip.AddrPort, proto Protocol, timeout time.Duration) (net.Conn, error) {
	network := "tcp"
	if proto == UDP {
		network = "udp"
	} else if proto != TCP {
		return nil, fmt.Errorf("netmodel: unsupported protocol %q (real packets: TCP, UDP)", proto)
	}
	if from == nil || from.NS == nil || from.NS.name == "" {
		return nil, errors.New("netmodel: probe from a pod that is not attached")
	}
	var conn net.Conn
	var derr error
	if err := from.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		conn, derr = d.DialContext(ctx, network, to.String())
		return nil
	}); err != nil {
		return nil, err
	}
	return conn, derr
}

// setupError tells a broken probe (wrong family, no address, cancelled) from a denied one.
func setupError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, e := range []error{syscall.EADDRNOTAVAIL, syscall.EAFNOSUPPORT, syscall.EINVAL, syscall.EMFILE, syscall.ENFILE} {
		if errors.Is(err, e) {
			return err
		}
	}
	return nil
}

// ProbeReply is Probe that also returns the answer's identity ("x/a:80"): ok is true when
// a server answered; err is set only when the probe could not be made (not for drops,
// rejects or timeouts).
func (pr *Prober) ProbeReply(ctx context.Context, from *Pod, to netip.Addr, port int, proto Protocol, timeout time.Duration) (ident string, ok bool, err error) {
	timeout = pr.timeout(timeout)
	deadline := time.Now().Add(timeout)
	dst := netip.AddrPortFrom(to, uint16(port))
	conn, err := dial(ctx, from, dst, proto, timeout)
	if err != nil {
		return "", false, setupError(ctx, err)
	}
	defer conn.Close()
	suffix := ":" + strconv.Itoa(port)
	if proto == TCP {
		conn.SetDeadline(deadline)
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return "", false, setupError(ctx, err)
		}
		line = strings.TrimSuffix(line, "\n")
		return line, strings.HasSuffix(line, suffix), nil
	}
	buf := make([]byte, 2048)
	for attempt := 0; attempt < 2; attempt++ {
		token := "probe-" + strconv.FormatUint(probeSeq.Add(1), 10)
		if _, err := conn.Write([]byte(token)); err != nil {
			if e := setupError(ctx, err); e != nil {
				return "", false, e
			}
			continue // e.g. ECONNREFUSED from an earlier ICMP error
		}
		until := time.Now().Add(timeout / 2)
		if attempt == 1 || until.After(deadline) {
			until = deadline
		}
		conn.SetReadDeadline(until)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					return "", false, nil // ICMP port unreachable / reject
				}
				if e := setupError(ctx, err); e != nil {
					return "", false, e
				}
				break // timeout: retry
			}
			id, payload, _ := strings.Cut(string(buf[:n]), "\n")
			if payload == token {
				return id, strings.HasSuffix(id, suffix), nil
			}
			// a late answer to the earlier attempt: still proves reachability
			if strings.HasPrefix(payload, "probe-") {
				return id, strings.HasSuffix(id, suffix), nil
			}
		}
	}
	return "", false, setupError(ctx, ctx.Err())
}

// Probe opens a real connection from inside from's namespace to to:port and reports
// whether the server answered: TCP connects and reads the banner; UDP sends a datagram and
// waits for the echo, with one retry. timeout 0 means the Prober's Timeout. The error is
// set only when the probe could not be made at all.
func (pr *Prober) Probe(ctx context.Context, from *Pod, to netip.Addr, port int, proto Protocol, timeout time.Duration) (bool, error) {
	_, ok, err := pr.ProbeReply(ctx, from, to, port, proto, timeout)
	return ok, err
}

// Cell is one probe of a matrix: From and To are pod names ("x/a", "external").
type Cell struct {
	From, To string
	Port     int
	Proto    Protocol
	Family   Family
}

func (c Cell) String() string {
	return fmt.Sprintf("%s -> %s %s/%d %s", c.From, c.To, c.Proto, c.Port, c.Family)
}

// Reachability maps cells to allowed (true) or denied (false).
type Reachability map[Cell]bool

// Cells lists every ordered pair (self included) × ports × protos for the family.
func Cells(pods []*Pod, ports []int, protos []Protocol, family Family) []Cell {
	var out []Cell
	for _, f := range pods {
		for _, t := range pods {
			for _, proto := range protos {
				for _, port := range ports {
					out = append(out, Cell{From: f.Name, To: t.Name, Port: port, Proto: proto, Family: family})
				}
			}
		}
	}
	return out
}

// Expect builds an expected Reachability over Cells(pods, ports, protos, family) from
// allow; nil allow means everything is allowed.
func Expect(pods []*Pod, ports []int, protos []Protocol, family Family, allow func(Cell) bool) Reachability {
	r := Reachability{}
	for _, c := range Cells(pods, ports, protos, family) {
		r[c] = allow == nil || allow(c)
	}
	return r
}

// Merge copies other's cells into r and returns r.
func (r Reachability) Merge(other Reachability) Reachability {
	for c, v := range other {
		r[c] = v
	}
	return r
}

// Matrix probes every ordered pair of pods (a pod to itself too) on every port and
// protocol, to the destination's address of the family, in parallel (Workers at once,
// Timeout each). Self traffic never leaves the pod's namespace (it goes over the pod's own
// loopback route), so the node's firewall cannot see or stop it: expect it allowed.
// The error reports probes that could not be made (their cells are false).
func (pr *Prober) Matrix(ctx context.Context, pods []*Pod, ports []int, protos []Protocol, family Family) (Reachability, error) {
	byName := map[string]*Pod{}
	for _, p := range pods {
		byName[p.Name] = p
	}
	cells := Cells(pods, ports, protos, family)
	workers := DefaultWorkers
	if pr != nil && pr.Workers > 0 {
		workers = pr.Workers
	}
	res := make([]bool, len(cells))
	errs := make([]error, len(cells))
	var next atomic.Int64
	var wg sync.WaitGroup
	run := func(i int) {
		c := cells[i]
		to := byName[c.To].Addr(family)
		if !to.IsValid() {
			errs[i] = fmt.Errorf("%v: %s has no %v address", c, c.To, family)
			return
		}
		ok, err := pr.Probe(ctx, byName[c.From], to, c.Port, c.Proto, 0)
		if err == nil && !ok && pr != nil && pr.Recheck {
			ok, err = pr.Probe(ctx, byName[c.From], to, c.Port, c.Proto, 0)
		}
		res[i] = ok
		if err != nil {
			errs[i] = fmt.Errorf("%v: %w", c, err)
		}
	}
	for w := 0; w < min(workers, len(cells)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cells) || ctx.Err() != nil {
					return
				}
				run(i)
			}
		}()
	}
	wg.Wait()
	out := make(Reachability, len(cells))
	for i, c := range cells {
		out[c] = res[i]
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, errors.Join(errs...)
}

// Diff lists the cells of expected whose value in actual differs (a cell missing from
// actual counts as denied), sorted.
func Diff(expected, actual Reachability) []Cell {
	var out []Cell
	for c, want := range expected {
		if actual[c] != want {
			out = append(out, c)
		}
	}
	sortCells(out)
	return out
}

func sortCells(cs []Cell) {
	slices.SortFunc(cs, func(a, b Cell) int {
		switch {
		case a.Family != b.Family:
			return int(a.Family) - int(b.Family)
		case a.Proto != b.Proto:
			return strings.Compare(string(a.Proto), string(b.Proto))
		case a.Port != b.Port:
			return a.Port - b.Port
		case a.From != b.From:
			return strings.Compare(a.From, b.From)
		}
		return strings.Compare(a.To, b.To)
	})
}

type tableKey struct {
	family Family
	proto  Protocol
	port   int
}

// Format prints actual as truth tables, one per family × protocol × port, like the
// Kubernetes e2e network-policy suite: rows are sources, columns destinations, '.' allowed,
// 'X' denied, a trailing '*' marks a cell that differs from expected (pass nil expected to
// print actual alone), '?' a cell that was not probed.
func Format(expected, actual Reachability) string {
	keys := map[tableKey]bool{}
	names := map[string]bool{}
	for _, r := range []Reachability{expected, actual} {
		for c := range r {
			keys[tableKey{c.Family, c.Proto, c.Port}] = true
			names[c.From], names[c.To] = true, true
		}
	}
	var ks []tableKey
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.family != b.family {
			return a.family < b.family
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.port < b.port
	})
	var pods []string
	width := 1
	for n := range names {
		pods = append(pods, n)
		width = max(width, len(n))
	}
	sort.Strings(pods)
	width = max(width, len("from\\to")) + 1
	var b strings.Builder
	for _, k := range ks {
		mismatches := 0
		var rows strings.Builder
		fmt.Fprintf(&rows, "%-*s", width, "from\\to")
		for _, to := range pods {
			fmt.Fprintf(&rows, " %-*s", max(len(to), 2), to)
		}
		rows.WriteString("\n")
		for _, from := range pods {
			fmt.Fprintf(&rows, "%-*s", width, from)
			for _, to := range pods {
				c := Cell{From: from, To: to, Port: k.port, Proto: k.proto, Family: k.family}
				got, probed := actual[c]
				sym := "?"
				if probed {
					sym = "X"
					if got {
						sym = "."
					}
				}
				if expected != nil {
					if want, ok := expected[c]; ok && (want != got || !probed) {
						sym += "*"
						mismatches++
					}
				}
				fmt.Fprintf(&rows, " %-*s", max(len(to), 2), sym)
			}
			rows.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s %s/%d", k.family, k.proto, k.port)
		if expected != nil {
			fmt.Fprintf(&b, ": %d mismatch(es)", mismatches)
		}
		b.WriteString(" (rows: from, columns: to; '.' allow, 'X' deny, '*' differs from expected)\n")
		b.WriteString(rows.String())
	}
	return b.String()
}
