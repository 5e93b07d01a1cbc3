package scenarios

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// Scenario is one policy set over the model with its expected reachability.
type Scenario struct {
	// Name identifies the scenario (unique, usable as a subtest name).
	Name string
	// Upstream is the title of the Kubernetes e2e test the scenario reproduces
	// ("should support a 'default-deny-ingress' policy"); empty for project scenarios.
	Upstream string
	// Policies are YAML documents as users write them (FirewallPolicy,
	// ClusterFirewallPolicy, NetworkPolicy); decoded with policy/manifest.
	Policies []string
	// Externals are hosts outside the cluster that the tables include.
	Externals []External
	// Lookups are DNS lookups the workloads made through the node resolver before
	// the probes: they fill the FQDN sets (Store.RecordLookup).
	Lookups []Lookup
	// Options are the node settings (zero: default allow).
	Options policy.Options
	// Expect holds the expected tables; together they cover every port of Ports,
	// every protocol of Protocols and both families. Nil for Random scenarios.
	Expect []Expectation
}

// Lookup is one recorded DNS lookup: Workload ("x/a") resolved Name to IPs.
type Lookup struct {
	Workload string
	Name     string
	IPs      []netip.Addr
}

// Expectation is one truth table that holds for every listed port, protocol and
// family (nil Families: both).
//
// Table is text like the upstream suite prints: a header line naming the
// columns (destinations), then one line per source: its name and one cell per
// column, "." allowed and "X" denied. Whitespace is free.
//
//	     x/a x/b x/c y/a y/b y/c z/a z/b z/c
//	x/a   X   X   X   .   .   .   .   .   .
type Expectation struct {
	Ports     []int32
	Protocols []policy.Protocol
	Families  []Family
	Table     string
}

// Cell is one probe: From connects to To's address of Family on Port/Protocol.
type Cell struct {
	From, To string
	Port     int32
	Protocol policy.Protocol
	Family   Family
}

func (c Cell) String() string {
	return fmt.Sprintf("%s -> %s %s/%d %s", c.From, c.To, c.Protocol, c.Port, c.Family)
}

// Reachability maps cells to allowed (true) or denied (false).
type Reachability map[Cell]bool

// WithoutLoopback returns r without the cells from a pod to itself (which no
// node firewall can see; the upstream suite ignores them too).
func WithoutLoopback(r Reachability) Reachability {
	out := make(Reachability, len(r))
	for c, v := range r {
		if c.From != c.To {
			out[c] = v
		}
	}
	return out
}

// Workloads returns the workloads of the scenario (the model's).
func (s *Scenario) Workloads() *policy.Workloads { return Workloads() }

// Endpoints returns the rows/columns of the scenario's tables.
func (s *Scenario) Endpoints() []Endpoint { return Endpoints(s.Externals...) }

// Objects decodes the scenario's policies.
func (s *Scenario) Objects() ([]manifest.Object, error) {
	var objs []manifest.Object
	for i, doc := range s.Policies {
		o, err := manifest.Decode(fmt.Sprintf("%s/policy[%d]", s.Name, i), strings.NewReader(doc))
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// Store loads the model, the policies and the lookups into a new store.
func (s *Scenario) Store() (*policy.Store, error) {
	objs, err := s.Objects()
	if err != nil {
		return nil, err
	}
	st, err := manifest.LoadStore(objs, s.Workloads())
	if err != nil {
		return nil, err
	}
	for _, l := range s.Lookups {
		k, err := policy.ParseWorkloadKey(l.Workload)
		if err != nil {
			return nil, fmt.Errorf("%s: lookup: %w", s.Name, err)
		}
		if _, ok := st.Workload(k); !ok {
			return nil, fmt.Errorf("%s: lookup by unknown workload %s", s.Name, k)
		}
		st.RecordLookup(k, l.Name, l.IPs...)
	}
	return st, nil
}

// Engine returns the reference evaluator over the scenario.
func Engine(s Scenario) (*policy.Engine, error) {
	st, err := s.Store()
	if err != nil {
		return nil, err
	}
	return policy.NewEngine(st, s.Options), nil
}

// Matrix asks the engine for every cell between the model's pods and the given
// externals, on every port and protocol, to the destination's address of the
// family.
func Matrix(e *policy.Engine, ports []int32, protocols []policy.Protocol, family Family, externals ...External) Reachability {
	eps := Endpoints(externals...)
	r := make(Reachability, len(eps)*len(eps)*len(ports)*len(protocols))
	for _, from := range eps {
		for _, to := range eps {
			for _, proto := range protocols {
				for _, port := range ports {
					d := e.Decide(policy.Connection{Src: from.Addr(family), Dst: to.Addr(family), Port: port, Protocol: proto})
					r[Cell{From: from.Name, To: to.Name, Port: port, Protocol: proto, Family: family}] = d.Verdict == policy.Allow
				}
			}
		}
	}
	return r
}

// Actual is the engine's reachability for the scenario over every port,
// protocol and family of the model.
func Actual(s Scenario) (Reachability, error) {
	e, err := Engine(s)
	if err != nil {
		return nil, err
	}
	r := Reachability{}
	for _, f := range Families {
		for c, v := range Matrix(e, Ports, Protocols, f, s.Externals...) {
			r[c] = v
		}
	}
	return r, nil
}

// Expected parses the scenario's tables into cells. It is an error when a
// table is malformed, when two expectations cover the same cell, or when some
// port, protocol or family of the model is not covered.
func (s *Scenario) Expected() (Reachability, error) {
	eps := s.Endpoints()
	r := Reachability{}
	for i, ex := range s.Expect {
		t, err := ParseTable(ex.Table, eps)
		if err != nil {
			return nil, fmt.Errorf("%s: expect[%d]: %w", s.Name, i, err)
		}
		fams := ex.Families
		if len(fams) == 0 {
			fams = Families
		}
		if len(ex.Ports) == 0 || len(ex.Protocols) == 0 {
			return nil, fmt.Errorf("%s: expect[%d]: ports and protocols are required", s.Name, i)
		}
		for _, f := range fams {
			for _, port := range ex.Ports {
				for _, proto := range ex.Protocols {
					for k, v := range t {
						c := Cell{From: k[0], To: k[1], Port: port, Protocol: proto, Family: f}
						if _, dup := r[c]; dup {
							return nil, fmt.Errorf("%s: expect[%d]: %s/%d %s covered twice", s.Name, i, proto, port, f)
						}
						r[c] = v
					}
				}
			}
		}
	}
	for _, f := range Families {
		for _, port := range Ports {
			for _, proto := range Protocols {
				c := Cell{From: eps[0].Name, To: eps[0].Name, Port: port, Protocol: proto, Family: f}
				if _, ok := r[c]; !ok {
					return nil, fmt.Errorf("%s: no table for %s/%d %s", s.Name, proto, port, f)
				}
			}
		}
	}
	return r, nil
}

// ParseTable parses a truth table over the endpoints; the result maps
// [from, to] to allowed. Every endpoint must appear once as a column and once as
// a row.
func ParseTable(text string, eps []Endpoint) (map[[2]string]bool, error) {
	known := map[string]bool{}
	for _, e := range eps {
		known[e.Name] = true
	}
	var lines [][]string
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines = append(lines, f)
		}
	}
	if len(lines) == 0 {
		return nil, errors.New("empty table")
	}
	cols := lines[0]
	if len(cols) > 0 && !known[cols[0]] { // a corner label such as "-" or "from\to"
		cols = cols[1:]
	}
	if err := sameSet(cols, eps); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	var rows []string
	out := map[[2]string]bool{}
	for _, l := range lines[1:] {
		from := l[0]
		if !known[from] {
			return nil, fmt.Errorf("row %q: unknown source", from)
		}
		rows = append(rows, from)
		if len(l)-1 != len(cols) {
			return nil, fmt.Errorf("row %s: %d cells, want %d", from, len(l)-1, len(cols))
		}
		for j, cell := range l[1:] {
			switch cell {
			case ".":
				out[[2]string{from, cols[j]}] = true
			case "X":
				out[[2]string{from, cols[j]}] = false
			default:
				return nil, fmt.Errorf("row %s column %s: cell %q is neither '.' nor 'X'", from, cols[j], cell)
			}
		}
	}
	if err := sameSet(rows, eps); err != nil {
		return nil, fmt.Errorf("rows: %w", err)
	}
	return out, nil
}

func sameSet(names []string, eps []Endpoint) error {
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return fmt.Errorf("%s twice", n)
		}
		seen[n] = true
	}
	for _, e := range eps {
		if !seen[e.Name] {
			return fmt.Errorf("%s missing", e.Name)
		}
		delete(seen, e.Name)
	}
	for n := range seen {
		return fmt.Errorf("unknown endpoint %s", n)
	}
	return nil
}

// Diff lists the cells of expected whose value in actual differs (a cell
// missing from actual counts as a difference), sorted.
func Diff(expected, actual Reachability) []Cell {
	var out []Cell
	for c, want := range expected {
		if got, ok := actual[c]; !ok || got != want {
			out = append(out, c)
		}
	}
	SortCells(out)
	return out
}

// SortCells orders cells by family, protocol, port, source, destination (in
// table order for the model's pods).
func SortCells(cs []Cell) {
	slices.SortFunc(cs, func(a, b Cell) int {
		switch {
		case a.Family != b.Family:
			return int(a.Family) - int(b.Family)
		case a.Protocol != b.Protocol:
			return strings.Compare(string(a.Protocol), string(b.Protocol))
		case a.Port != b.Port:
			return int(a.Port - b.Port)
		case a.From != b.From:
			return strings.Compare(a.From, b.From)
		}
		return strings.Compare(a.To, b.To)
	})
}

// FormatTable prints the table of one port, protocol and family of r in the
// scenario table syntax (rows: from, columns: to).
func FormatTable(r Reachability, eps []Endpoint, port int32, proto policy.Protocol, f Family) string {
	return format(nil, r, eps, port, proto, f)
}

func format(expected, actual Reachability, eps []Endpoint, port int32, proto policy.Protocol, f Family) string {
	width := 3
	for _, e := range eps {
		width = max(width, len(e.Name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s", width, "-")
	for _, to := range eps {
		fmt.Fprintf(&b, " %-*s", max(len(to.Name), 3), to.Name)
	}
	b.WriteString("\n")
	for _, from := range eps {
		fmt.Fprintf(&b, "%-*s", width, from.Name)
		for _, to := range eps {
			c := Cell{From: from.Name, To: to.Name, Port: port, Protocol: proto, Family: f}
			got, ok := actual[c]
			sym := "?"
			if ok {
				sym = "X"
				if got {
					sym = "."
				}
			}
			if want, has := expected[c]; expected != nil && has && (!ok || want != got) {
				sym += "*"
			}
			fmt.Fprintf(&b, " %-*s", max(len(to.Name), 3), sym)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Format prints every table of actual that differs from expected (every table
// when expected is nil), marking differing cells with '*', with a heading per
// port, protocol and family: a readable diff.
func Format(expected, actual Reachability, eps []Endpoint) string {
	type key struct {
		f     Family
		proto policy.Protocol
		port  int32
	}
	bad := map[key]int{}
	keys := map[key]bool{}
	for c := range actual {
		keys[key{c.Family, c.Protocol, c.Port}] = true
	}
	for _, c := range Diff(expected, actual) {
		bad[key{c.Family, c.Protocol, c.Port}]++
		keys[key{c.Family, c.Protocol, c.Port}] = true
	}
	var ks []key
	for k := range keys {
		if expected == nil || bad[k] > 0 {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.f != b.f {
			return a.f < b.f
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.port < b.port
	})
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s %s/%d", k.f, k.proto, k.port)
		if expected != nil {
			fmt.Fprintf(&b, ": %d cell(s) differ, marked '*' (rows: from, columns: to; '.' allow, 'X' deny; shown: actual)", bad[k])
		}
		b.WriteString("\n")
		b.WriteString(format(expected, actual, eps, k.port, k.proto, k.f))
	}
	return b.String()
}
