// Package nftset is the nftables backend of ipset.Manager (github.com/google/nftables).
//
// Sets live in one table of family inet (default "egressd"). The table is created
// by Ensure when it is missing and is never flushed or deleted by this package.
//
//   - KindAddr: a hash set of ipv4_addr / ipv6_addr.
//   - KindPrefix: an interval set (flags interval) of ipv4_addr / ipv6_addr. The
//     package keeps it equal to a userspace range model (ipset/internal/iprange):
//     overlapping and adjacent prefixes are merged before they reach the kernel
//     (which rejects overlapping intervals), deleting a prefix out of a larger one
//     splits the range (except-style), 0.0.0.0/0 and ::/0 work. List returns the
//     fewest CIDRs that cover the ranges.
//   - KindAddrPair: a concatenated hash set ipv4_addr . ipv4_addr (ipv6 likewise).
//   - Spec.Timeout: the set has the timeout flag and elements carry per-element
//     timeouts (millisecond precision).
//
// Every Replace, Ensure and Destroy is one netlink batch (one Flush), so it takes
// effect completely or not at all. So is every Apply up to WithMaxBatchBytes
// (default 4 MiB, about 40,000 elements refreshed): a batch is sent in one
// sendmsg, which the kernel refuses beyond the socket buffer ("message too
// long"), so a larger Apply — the restore of a restarted resolver — is split
// into several transactions of at most that size, each atomic, applied in order.
// A failure then leaves the transactions before it applied (the error says how
// many); an element is never split from its own timeout refresh.
//
// Timeout refresh. The kernel does not reliably update an existing element on a
// plain add: NLM_F_CREATE without NLM_F_EXCL only ignores the duplicate on older
// kernels; newer ones (kernel commit 4201f3938914, "set element timeout update
// support") update it only when the timeout differs or an expiration attribute is
// sent, which google/nftables v0.3.0 cannot send, and never make a timed element
// permanent. So for a set with timeouts an OpAdd is sent as three messages in the
// same batch: add the elements without a timeout (a no-op for those present, so
// the next step cannot fail), delete them, add them again with their timeouts.
// The result is exactly the new timeout on
// every kernel, atomically, without reading the set first. OpDelete is sent as add
// + delete for the same reason: deleting an absent element is not an error. For
// interval sets the package reads the set, applies the operations to the model and
// sends the difference (removed ranges deleted, new or refreshed ranges added).
package nftset

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/iprange"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTable is the name of the inet table the sets live in.
const DefaultTable = "egressd"

// maxNameLen is the kernel's limit on set names (NFT_NAME_MAXLEN - 1).
const maxNameLen = 255

// chunk is the number of elements per netlink message (all in the same batch).
const chunk = 1024

// defaultBatchBytes is the default WithMaxBatchBytes.
const defaultBatchBytes = 4 << 20

// Option configures New.
type Option func(*config)

type config struct {
	batch   int
	table   string
	netns   int
	conn    *nftables.Conn
	now     func() time.Time
	sockBuf int
}

// WithTable sets the name of the inet table (default "egressd").
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// WithMaxBatchBytes bounds the size of one netlink batch of Apply (default 4 MiB,
// well below the 16 MiB socket buffer of the Manager's own connection); larger
// Applies are split into several transactions.
func WithMaxBatchBytes(n int) Option { return func(c *config) { c.batch = n } }

// WithNetNS makes the Manager work in the network namespace of the fd (as from
// netns.NsHandle); without it, the namespace of the process is used.
func WithNetNS(fd int) Option { return func(c *config) { c.netns = fd } }

// WithConn uses conn instead of a connection of the Manager's own. The Manager
// flushes conn in every call, so conn must not be shared with a user that queues
// messages concurrently. A conn of one's own (the default) also gets a large socket
// send buffer for big batches.
func WithConn(conn *nftables.Conn) Option { return func(c *config) { c.conn = conn } }

// WithClock sets the clock used to turn kernel expiry into remaining time when an
// interval set is rewritten (tests only; default time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// Manager is the nftables implementation of ipset.Manager.
type Manager struct {
	mu      sync.Mutex
	conn    *nftables.Conn
	ownConn bool
	table   *nftables.Table
	now     func() time.Time
	specs   map[string]ipset.Spec
	cfg     config
}

var _ ipset.Manager = (*Manager)(nil)

// New returns a Manager of the sets of table inet <table>. It does not touch the
// kernel; Ensure creates the table when it is missing.
func New(opts ...Option) (*Manager, error) {
	c := config{table: DefaultTable, now: time.Now, sockBuf: 16 << 20, batch: defaultBatchBytes}
	for _, o := range opts {
		o(&c)
	}
	if c.batch <= 0 {
		c.batch = defaultBatchBytes
	}
	if c.table == "" || len(c.table) > maxNameLen {
		return nil, fmt.Errorf("nftset: %w table name %q", ipset.ErrInvalid, c.table)
	}
	m := &Manager{
		conn:  c.conn,
		table: &nftables.Table{Name: c.table, Family: nftables.TableFamilyINet},
		now:   c.now,
		specs: map[string]ipset.Spec{},
		cfg:   c,
	}
	if m.conn == nil {
		conn, err := nftables.New(nftables.WithNetNSFd(c.netns), nftables.AsLasting(),
			nftables.WithSockOptions(BufferForce(c.sockBuf)))
		if err != nil {
			return nil, fmt.Errorf("nftset: open netlink: %w", err)
		}
		m.conn, m.ownConn = conn, true
	}
	return m, nil
}

// BufferForce raises the socket buffers (SO_SNDBUFFORCE needs CAP_NET_ADMIN; when
// it fails, the plain limits are kept): a batch is sent in one sendmsg, which
// netlink refuses when it is larger than the send buffer.
func BufferForce(n int) nftables.SockOption {
	return func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil
		}
		_ = rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, n)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
			}
		})
		return nil
	}
}

// Close releases the Manager's own netlink connection (not one given by WithConn).
func (m *Manager) Close() error {
	if m.ownConn {
		return m.conn.CloseLasting()
	}
	return nil
}

// discard drops the queued messages after a failure to encode one of them (which
// validation makes practically impossible): the Manager's own connection is
// replaced; a connection given by WithConn is flushed, which the kernel then applies
// or rejects as a whole.
func (m *Manager) discard() {
	if !m.ownConn {
		_ = m.conn.Flush()
		return
	}
	fresh, err := nftables.New(nftables.WithNetNSFd(m.cfg.netns), nftables.AsLasting(), nftables.WithSockOptions(BufferForce(m.cfg.sockBuf)))
	if err != nil {
		_ = m.conn.Flush()
		return
	}
	_ = m.conn.CloseLasting()
	m.conn = fresh
}

// Table returns the table the sets live in (family inet).
func (m *Manager) Table() *nftables.Table { return m.table }

// KeyType returns the nftables key type of the spec's elements.
func KeyType(spec ipset.Spec) nftables.SetDatatype {
	t := nftables.TypeIPAddr
	if spec.Family == ipset.IPv6 {
		t = nftables.TypeIP6Addr
	}
	if spec.Kind == ipset.KindAddrPair {
		return nftables.MustConcatSetType(t, t)
	}
	return t
}

// NFTSet returns the nftables set object of spec in table, for callers that create
// sets in a transaction of their own (the enforcer: conn.AddSet(NFTSet(t, spec),
// elems) next to its chains, then one conn.Flush). It is the same definition that
// Manager.Ensure creates, so the Manager adopts such sets and writes to them.
func NFTSet(table *nftables.Table, spec ipset.Spec) *nftables.Set {
	return &nftables.Set{
		Table:         table,
		Name:          spec.Name,
		KeyType:       KeyType(spec),
		KeyByteOrder:  binaryutil.BigEndian,
		Interval:      spec.Kind == ipset.KindPrefix,
		Concatenation: spec.Kind == ipset.KindAddrPair,
		HasTimeout:    spec.Timeout,
	}
}

// NFTElements returns the nftables elements that make elems the content of an
// empty set of spec (use them with conn.AddSet or conn.SetAddElements on a set
// created in the same transaction). KindPrefix elements are merged into ranges
// first (start element, and an interval-end element at last+1 unless the range
// reaches the last address). Use Manager.Apply, not this, to add to a set that
// already has elements. Errors are *ipset.Error naming the element.
func NFTElements(spec ipset.Spec, elems []ipset.Element) ([]nftables.SetElement, error) {
	norm, err := normalize("elements", spec, elems)
	if err != nil {
		return nil, err
	}
	if spec.Kind == ipset.KindPrefix {
		return rangeElements(modelOf(norm, time.Now()).Ranges(), time.Now()), nil
	}
	return hashElements(dedupe(norm), true), nil
}

// SpecOf reads the ipset.Spec back from an nftables set (as listed by the kernel).
func SpecOf(s *nftables.Set) (ipset.Spec, error) {
	spec := ipset.Spec{Name: s.Name, Timeout: s.HasTimeout}
	magic := s.KeyType.GetNFTMagic()
	for _, f := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
		for _, k := range []ipset.Kind{ipset.KindAddr, ipset.KindAddrPair} {
			kt := KeyType(ipset.Spec{Family: f, Kind: k})
			if kt.GetNFTMagic() == magic {
				spec.Family, spec.Kind = f, k
			}
		}
	}
	switch {
	case spec.Kind == 0 || s.IsMap:
		return spec, fmt.Errorf("%w: set %q has key type %q, not an address set", ipset.ErrMismatch, s.Name, s.KeyType.Name)
	case s.Interval && spec.Kind == ipset.KindAddrPair:
		return spec, fmt.Errorf("%w: set %q is a concatenated interval set", ipset.ErrMismatch, s.Name)
	case s.Interval:
		spec.Kind = ipset.KindPrefix
	}
	return spec, nil
}

// Ensure implements ipset.Manager: the table (when missing) and the missing sets
// are created in one batch.
func (m *Manager) Ensure(ctx context.Context, specs ...ipset.Spec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[string]ipset.Spec{}
	for _, s := range specs {
		if err := validate(s); err != nil {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		}
		if old, ok := want[s.Name]; ok && old != s {
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: defined twice (%+v, %+v)", ipset.ErrInvalid, old, s)}
		}
		want[s.Name] = s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.conn.ListTableOfFamily(m.table.Name, m.table.Family); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			return &ipset.Error{Op: "ensure", Set: names(specs), Err: fmt.Errorf("list table inet %s: %w", m.table.Name, err)}
		}
		m.conn.AddTable(m.table)
	}
	var created []string
	for _, s := range specs {
		if _, done := want[s.Name]; !done {
			continue // duplicate
		}
		delete(want, s.Name)
		got, err := m.lookup(s.Name)
		switch {
		case errors.Is(err, ipset.ErrNotExist):
			if err := m.conn.AddSet(NFTSet(m.table, s), nil); err != nil {
				return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
			}
			created = append(created, s.Name)
		case err != nil:
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: err}
		case got != s:
			return &ipset.Error{Op: "ensure", Set: s.Name, Err: fmt.Errorf("%w: want %s, kernel has %s", ipset.ErrMismatch, describe(s), describe(got))}
		}
	}
	if err := m.conn.Flush(); err != nil {
		return &ipset.Error{Op: "ensure", Set: strings.Join(created, ", "), Err: kernelErr(err)}
	}
	for _, s := range specs {
		m.specs[s.Name] = s
	}
	return nil
}

func describe(s ipset.Spec) string {
	return fmt.Sprintf("%v %v timeout=%v", s.Family, s.Kind, s.Timeout)
}

func names(specs []ipset.Spec) string {
	var n []string
	for _, s := range specs {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

func validate(s ipset.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(s.Name) > maxNameLen {
		return fmt.Errorf("%w spec: name longer than %d bytes", ipset.ErrInvalid, maxNameLen)
	}
	return nil
}

// lookup returns the spec of a set in the kernel (ErrNotExist when absent).
func (m *Manager) lookup(name string) (ipset.Spec, error) {
	s, err := m.conn.GetSetByName(m.table, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ipset.Spec{}, ipset.ErrNotExist
		}
		return ipset.Spec{}, err
	}
	return SpecOf(s)
}

// spec returns the spec of a set, adopting sets this Manager did not create.
func (m *Manager) spec(name string) (ipset.Spec, error) {
	if s, ok := m.specs[name]; ok {
		return s, nil
	}
	s, err := m.lookup(name)
	if err != nil {
		return s, err
	}
	m.specs[name] = s
	return s, nil
}

func (m *Manager) set(spec ipset.Spec) *nftables.Set { return NFTSet(m.table, spec) }

func kernelErr(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w (kernel: %w)", ipset.ErrNotExist, err)
	}
	return err
}

func normalize(op string, spec ipset.Spec, elems []ipset.Element) ([]ipset.Element, error) {
	out := make([]ipset.Element, len(elems))
	for i, e := range elems {
		n, err := spec.Normalize(e)
		if err != nil {
			return nil, &ipset.Error{Op: op, Set: spec.Name, Element: e.String(), Err: err}
		}
		out[i] = n
	}
	return out, nil
}

// dedupe keeps the last of elements with the same key (a delete of the same key
// twice in one message would fail).
func dedupe(elems []ipset.Element) []ipset.Element {
	seen := make(map[string]int, len(elems))
	out := elems[:0:0]
	for _, e := range elems {
		k := e.Key()
		if i, ok := seen[k]; ok {
			out[i] = e
			continue
		}
		seen[k] = len(out)
		out = append(out, e)
	}
	return out
}

func hashKey(e ipset.Element) []byte {
	if e.Src.IsValid() {
		return append(e.Src.AsSlice(), e.Prefix.Addr().AsSlice()...)
	}
	return e.Prefix.Addr().AsSlice()
}

func hashElements(elems []ipset.Element, withTimeout bool) []nftables.SetElement {
	out := make([]nftables.SetElement, len(elems))
	for i, e := range elems {
		out[i] = nftables.SetElement{Key: hashKey(e)}
		if withTimeout {
			out[i].Timeout = msCeil(e.Timeout)
		}
	}
	return out
}

func msCeil(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

func modelOf(elems []ipset.Element, now time.Time) *iprange.Set {
	var s iprange.Set
	for _, e := range elems {
		s.Add(e.Prefix, expiry(now, e.Timeout))
	}
	return &s
}

func expiry(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// rangeElements encodes ranges as interval-set elements.
func rangeElements(rs []iprange.Range, now time.Time) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		var to time.Duration
		if !r.Expiry.IsZero() {
			if to = msCeil(r.Expiry.Sub(now)); to <= 0 {
				continue // expired meanwhile
			}
		}
		out = append(out, nftables.SetElement{Key: r.Start.AsSlice(), Timeout: to})
		if end := r.End.Next(); end.IsValid() && end.BitLen() == r.End.BitLen() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true}) // the kernel refuses timeouts on interval ends
		}
	}
	return out
}

// rangeKeys returns the elements that delete ranges (timeouts do not matter).
func rangeKeys(rs []iprange.Range) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.Start.AsSlice()})
		if end := r.End.Next(); end.IsValid() && end.BitLen() == r.End.BitLen() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// decodeRanges turns interval-set elements as dumped by the kernel into ranges.
func decodeRanges(spec ipset.Spec, elems []nftables.SetElement, now time.Time) ([]iprange.Range, error) {
	type point struct {
		a   netip.Addr
		end bool
		exp time.Duration
	}
	pts := make([]point, 0, len(elems))
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || (a.Is4() != (spec.Family == ipset.IPv4)) {
			return nil, fmt.Errorf("unexpected key %x in %v interval set", e.Key, spec.Family)
		}
		pts = append(pts, point{a, e.IntervalEnd, e.Expires})
	}
	// Ascending; at equal keys the end of the previous range comes first.
	sort.SliceStable(pts, func(i, j int) bool {
		if c := pts[i].a.Compare(pts[j].a); c != 0 {
			return c < 0
		}
		return pts[i].end && !pts[j].end
	})
	var out []iprange.Range
	var open *point
	for i := range pts {
		p := pts[i]
		switch {
		case !p.end && open == nil:
			open = &pts[i]
		case !p.end: // a start without an end before another start: close it there
			out = append(out, iprange.Range{Start: open.a, End: p.a.Prev(), Expiry: expiry(now, open.exp)})
			open = &pts[i]
		case open != nil:
			if p.a != open.a {
				out = append(out, iprange.Range{Start: open.a, End: p.a.Prev(), Expiry: expiry(now, open.exp)})
			}
			open = nil
		}
		// an end without a start (e.g. the 0.0.0.0 end element old nft versions add) is ignored
	}
	if open != nil {
		last := netip.IPv4Unspecified()
		if spec.Family == ipset.IPv6 {
			last = netip.IPv6Unspecified()
		}
		_, last = iprange.Bounds(netip.PrefixFrom(last, 0))
		out = append(out, iprange.Range{Start: open.a, End: last, Expiry: expiry(now, open.exp)})
	}
	return out, nil
}

func decodeHash(spec ipset.Spec, e nftables.SetElement) (ipset.Element, error) {
	n := 4
	if spec.Family == ipset.IPv6 {
		n = 16
	}
	want := n
	if spec.Kind == ipset.KindAddrPair {
		want = 2 * n
	}
	if len(e.Key) != want {
		return ipset.Element{}, fmt.Errorf("unexpected key %x in %v %v set", e.Key, spec.Family, spec.Kind)
	}
	dst, _ := netip.AddrFromSlice(e.Key[want-n:])
	out := ipset.Addr(dst, e.Expires)
	if spec.Kind == ipset.KindAddrPair {
		out.Src, _ = netip.AddrFromSlice(e.Key[:n])
	}
	return out, nil
}

func (m *Manager) queue(add bool, set *nftables.Set, elems []nftables.SetElement) error {
	for len(elems) > 0 {
		n := min(chunk, len(elems))
		var err error
		if add {
			err = m.conn.SetAddElements(set, elems[:n])
		} else {
			err = m.conn.SetDeleteElements(set, elems[:n])
		}
		if err != nil {
			return err
		}
		elems = elems[n:]
	}
	return nil
}

// Apply implements ipset.Manager in one netlink batch, or in several when it is
// larger than WithMaxBatchBytes (see the package documentation).
func (m *Manager) Apply(ctx context.Context, ops ...ipset.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Validate everything before queueing anything.
	specs := make([]ipset.Spec, len(ops))
	norm := make([][]ipset.Element, len(ops))
	var touched []string
	for i, op := range ops {
		s, err := m.spec(op.Set)
		if err != nil {
			return &ipset.Error{Op: "apply", Set: op.Set, Err: err}
		}
		specs[i] = s
		switch op.Kind {
		case ipset.OpAdd, ipset.OpDelete:
			if norm[i], err = normalize("apply", s, op.Elements); err != nil {
				return err
			}
		case ipset.OpFlush:
		default:
			return &ipset.Error{Op: "apply", Set: op.Set, Err: fmt.Errorf("%w op kind %d", ipset.ErrInvalid, op.Kind)}
		}
		if !slices.Contains(touched, op.Set) {
			touched = append(touched, op.Set)
		}
	}
	// Interval sets: read them now, so that nothing is queued before every check passed.
	models := map[string]*rangeDiff{}
	for i, op := range ops {
		if specs[i].Kind != ipset.KindPrefix || models[op.Set] != nil {
			continue
		}
		d, err := m.readRanges(specs[i])
		if err != nil {
			return &ipset.Error{Op: "apply", Set: op.Set, Err: err}
		}
		models[op.Set] = d
	}
	b := &batcher{m: m, touched: touched, max: m.cfg.batch}
	for i, op := range ops {
		spec := specs[i]
		set := m.set(spec)
		if spec.Kind == ipset.KindPrefix {
			d := models[op.Set]
			switch op.Kind {
			case ipset.OpAdd:
				for _, e := range norm[i] {
					d.model.Add(e.Prefix, expiry(d.now, e.Timeout))
				}
			case ipset.OpDelete:
				for _, e := range norm[i] {
					d.model.Delete(e.Prefix)
				}
			case ipset.OpFlush:
				d.model.Clear()
			}
			continue
		}
		if op.Kind == ipset.OpFlush {
			if err := b.room(msgBytes(set, 0, 0)); err != nil {
				return b.fail(err)
			}
			m.conn.FlushSet(set)
			continue
		}
		elems := dedupe(norm[i])
		for len(elems) > 0 {
			// A chunk and its timeout refresh (add bare, delete, add with
			// timeout) always go into the same transaction.
			c := elems[:min(chunk, len(elems))]
			elems = elems[len(c):]
			bare := hashElements(c, false)
			keyLen := len(bare[0].Key)
			var err error
			switch {
			case op.Kind == ipset.OpAdd && spec.Timeout:
				if err = b.room(2*msgBytes(set, len(c), keyLen) + msgBytes(set, len(c), keyLen+12)); err != nil {
					return b.fail(err)
				}
				err = errors.Join(m.queue(true, set, bare), m.queue(false, set, bare), m.queue(true, set, hashElements(c, true)))
			case op.Kind == ipset.OpAdd:
				if err = b.room(msgBytes(set, len(c), keyLen)); err != nil {
					return b.fail(err)
				}
				err = m.queue(true, set, bare)
			default: // OpDelete
				if err = b.room(2 * msgBytes(set, len(c), keyLen)); err != nil {
					return b.fail(err)
				}
				err = errors.Join(m.queue(true, set, bare), m.queue(false, set, bare))
			}
			if err != nil {
				m.discard()
				return b.fail(err)
			}
		}
	}
	for name, d := range models {
		set := m.set(m.specs[name])
		del, add := d.diff()
		dk, ak := rangeKeys(del), rangeElements(add, m.now())
		if err := b.room(msgBytes(set, len(dk), 16) + msgBytes(set, len(ak), 28)); err != nil {
			return b.fail(err)
		}
		if err := errors.Join(m.queue(false, set, dk), m.queue(true, set, ak)); err != nil {
			m.discard()
			return b.fail(err)
		}
	}
	if err := b.flush(); err != nil {
		return b.fail(err)
	}
	return nil
}

// msgBytes is an upper estimate of the netlink bytes of n elements with keys
// of keyLen bytes (plus 12 for a timeout) sent to set, in messages of chunk
// elements: headers and the table and set names per message, attribute
// headers per element.
func msgBytes(set *nftables.Set, n, keyLen int) int {
	msgs := max(1, (n+chunk-1)/chunk)
	return msgs*(64+len(set.Table.Name)+len(set.Name)) + n*(keyLen+24)
}

// batcher queues the messages of one Apply and sends them in transactions of
// at most max bytes.
type batcher struct {
	m       *Manager
	touched []string
	max     int
	pending int // bytes queued in the open transaction
	done    int // transactions of this Apply already applied
}

// room makes room for n more bytes in the open transaction, sending it first
// when they would not fit.
func (b *batcher) room(n int) error {
	if b.pending > 0 && b.pending+n > b.max {
		if err := b.flush(); err != nil {
			return err
		}
	}
	b.pending += n
	return nil
}

// flush sends the open transaction.
func (b *batcher) flush() error {
	if err := b.m.conn.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			for _, n := range b.touched {
				delete(b.m.specs, n)
			}
		}
		return kernelErr(err)
	}
	b.pending = 0
	b.done++
	return nil
}

// fail returns err naming the sets, and how many transactions of the Apply
// took effect before it (the caller discards what an encoding error left
// queued; a failed Flush leaves nothing queued).
func (b *batcher) fail(err error) error {
	if b.done > 0 {
		err = fmt.Errorf("%w (the Apply was split; its first %d transactions were applied)", err, b.done)
	}
	return &ipset.Error{Op: "apply", Set: strings.Join(b.touched, ", "), Err: err}
}

type rangeDiff struct {
	now   time.Time
	old   []iprange.Range
	model *iprange.Set
}

func (m *Manager) readRanges(spec ipset.Spec) (*rangeDiff, error) {
	now := m.now()
	elems, err := m.conn.GetSetElements(m.set(spec))
	if err != nil {
		return nil, kernelErr(err)
	}
	old, err := decodeRanges(spec, elems, now)
	if err != nil {
		return nil, err
	}
	return &rangeDiff{now: now, old: old, model: iprange.FromRanges(old)}, nil
}

// diff returns the kernel ranges to delete and the ranges to add.
func (d *rangeDiff) diff() (del, add []iprange.Range) {
	same := func(a, b iprange.Range) bool { return a.Start == b.Start && a.End == b.End && a.Expiry.Equal(b.Expiry) }
	nw := d.model.Ranges()
	for _, o := range d.old {
		if !slices.ContainsFunc(nw, func(n iprange.Range) bool { return same(o, n) }) {
			del = append(del, o)
		}
	}
	for _, n := range nw {
		if !slices.ContainsFunc(d.old, func(o iprange.Range) bool { return same(o, n) }) {
			add = append(add, n)
		}
	}
	return del, add
}

// Replace implements ipset.Manager: flush and add in one batch.
func (m *Manager) Replace(ctx context.Context, name string, elems []ipset.Element) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	spec, err := m.spec(name)
	if err != nil {
		return &ipset.Error{Op: "replace", Set: name, Err: err}
	}
	norm, err := normalize("replace", spec, elems)
	if err != nil {
		return err
	}
	set := m.set(spec)
	m.conn.FlushSet(set)
	now := m.now()
	var nelems []nftables.SetElement
	if spec.Kind == ipset.KindPrefix {
		nelems = rangeElements(modelOf(norm, now).Ranges(), now)
	} else {
		nelems = hashElements(dedupe(norm), true)
	}
	if err := m.queue(true, set, nelems); err != nil {
		m.discard()
		return &ipset.Error{Op: "replace", Set: name, Err: err}
	}
	if err := m.conn.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			delete(m.specs, name)
		}
		return &ipset.Error{Op: "replace", Set: name, Err: kernelErr(err)}
	}
	return nil
}

// List implements ipset.Manager; Element.Timeout is the remaining time.
func (m *Manager) List(ctx context.Context, name string) ([]ipset.Element, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	spec, err := m.spec(name)
	if err != nil {
		return nil, &ipset.Error{Op: "list", Set: name, Err: err}
	}
	raw, err := m.conn.GetSetElements(m.set(spec))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			delete(m.specs, name)
		}
		return nil, &ipset.Error{Op: "list", Set: name, Err: kernelErr(err)}
	}
	var out []ipset.Element
	if spec.Kind == ipset.KindPrefix {
		now := m.now()
		rs, err := decodeRanges(spec, raw, now)
		if err != nil {
			return nil, &ipset.Error{Op: "list", Set: name, Err: err}
		}
		for _, p := range iprange.FromRanges(rs).Prefixes() {
			var to time.Duration
			if !p.Expiry.IsZero() {
				to = p.Expiry.Sub(now)
			}
			out = append(out, ipset.Element{Prefix: p.Prefix, Timeout: to})
		}
		return out, nil
	}
	for _, r := range raw {
		e, err := decodeHash(spec, r)
		if err != nil {
			return nil, &ipset.Error{Op: "list", Set: name, Err: err}
		}
		out = append(out, e)
	}
	ipset.SortElements(out)
	return out, nil
}

// Destroy implements ipset.Manager in one batch; absent sets are skipped. A set
// that a rule still references cannot be deleted (the kernel answers EBUSY).
func (m *Manager) Destroy(ctx context.Context, sets ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []string
	for _, name := range sets {
		spec, err := m.lookup(name)
		if errors.Is(err, ipset.ErrNotExist) {
			delete(m.specs, name)
			continue
		}
		if err != nil && !errors.Is(err, ipset.ErrMismatch) {
			return &ipset.Error{Op: "destroy", Set: name, Err: err}
		}
		spec.Name = name
		m.conn.DelSet(m.set(spec))
		gone = append(gone, name)
	}
	if err := m.conn.Flush(); err != nil {
		return &ipset.Error{Op: "destroy", Set: strings.Join(gone, ", "), Err: kernelErr(err)}
	}
	for _, n := range gone {
		delete(m.specs, n)
	}
	return nil
}
