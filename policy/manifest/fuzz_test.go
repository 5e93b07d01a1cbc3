package manifest_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// FuzzDecodePolicy feeds arbitrary bytes through the whole loading path —
// Decode, Validate, LoadStore, a compile and a few decisions — which must never
// panic, and checks that Validate and the store agree on what is valid.
func FuzzDecodePolicy(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/*.yaml")
	more, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range append(seeds, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// One seed per document: small inputs keep the fuzzer fast.
		for _, doc := range bytes.Split(b, []byte("\n---\n")) {
			f.Add(doc)
		}
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: n, namespace: x}\n  spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80, endPort: 90}]}]}\n"))
	f.Add([]byte("{\"apiVersion\":\"egressd.io/v1alpha1\",\"kind\":\"FirewallPolicy\",\"metadata\":{\"name\":\"j\",\"namespace\":\"payments\"},\"spec\":{\"podSelector\":{},\"egress\":[]}}"))
	f.Add([]byte("---\n---\n# only comments\n"))
	ws, err := manifest.LoadWorkloads("../testdata/design-workloads.yaml")
	if err != nil {
		f.Fatal(err)
	}
	ip := netip.MustParseAddr
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, _ := manifest.Decode("fuzz", bytes.NewReader(data))
		valid := 0
		for i := range objs {
			o := &objs[i]
			_ = o.Ref().String()
			if o.Validate() == nil {
				valid++
				if err := o.Apply(policy.NewStore()); err != nil {
					t.Fatalf("%s: valid but the store rejects it: %v", o.Source, err)
				}
			}
		}
		s, _ := manifest.LoadStore(objs, ws)
		if got := len(s.Policies()); got > valid {
			t.Fatalf("store holds %d policies, only %d valid", got, valid)
		}
		gw := policy.WorkloadKey{Namespace: "payments", Name: "gateway-0"}
		s.RecordLookup(gw, "api.stripe.com", ip("52.1.1.1"))
		e := policy.NewEngine(s, policy.Options{})
		for _, c := range []policy.Connection{
			{Src: ip("10.0.1.6"), Dst: ip("10.0.1.5"), Port: 8080},
			{Src: ip("10.0.1.5"), Dst: ip("52.1.1.1"), Port: 443, Protocol: policy.ProtocolTCP},
			{Src: ip("fd00::1:5"), Dst: ip("10.0.2.7"), Port: 9090, Protocol: policy.ProtocolUDP},
		} {
			d := e.Decide(c)
			if d.Verdict != policy.Allow && d.Verdict != policy.Deny {
				t.Fatalf("verdict %q", d.Verdict)
			}
			_ = d.Deciding()
		}
		for _, n := range []string{"api.stripe.com", "x.minepool.com", "kubernetes.default.svc.cluster.local", "a..b"} {
			_ = e.DecideLookup(gw, n)
			_ = e.FQDNRules(gw, n)
		}
		plan, _ := policy.NewCompiler(s, policy.Options{}).Compile()
		if len(plan.Workloads) != len(ws.Pods) {
			t.Fatalf("plan has %d workloads, want %d", len(plan.Workloads), len(ws.Pods))
		}
	})
}

// TestFuzzSeedsAreValid: the committed seed policies all load.
func TestFuzzSeedsAreValid(t *testing.T) {
	objs, err := manifest.DecodePath("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 100 {
		t.Fatalf("only %d seed policies", len(objs))
	}
	for _, o := range objs {
		if err := o.Validate(); err != nil {
			t.Error(err)
		}
	}
}

// FuzzDecodeWorkloads: the workloads file's decoding (schema walk, addresses,
// pod names, lines) never panics; what it accepts loads into a store unless
// an entry lacks a name, and every problem it reports is a *Problem.
func FuzzDecodeWorkloads(f *testing.F) {
	for _, p := range []string{"../testdata/design-workloads.yaml", "../../deploy/examples/workloads.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("pods:\n- {namespace: x, name: a, ips: [10.0.0.300], lables: {}}\n- {namespace: x, name: b, ips: [10.0.0.1, 10.0.0.1]}\n"))
	f.Add([]byte("apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\n"))
	f.Add([]byte("namespaces: &a [{name: x}]\npods: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := manifest.DecodeWorkloads("fuzz", data)
		if err != nil {
			for _, e := range unwrapAll(err) {
				var p *manifest.Problem
				if !errors.As(e, &p) {
					t.Fatalf("not a *Problem: %T %v", e, e)
				}
			}
			return
		}
		_ = policy.NewStore().LoadWorkloads(ws)
	})
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unwrapAll(e)...)
		}
		return out
	}
	return []error{err}
}
