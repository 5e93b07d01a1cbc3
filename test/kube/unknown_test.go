package kube_test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/test/netmodel"
)

// askFrom sends one EDNS0 query from inside ns to the node resolver.
func askFrom(t *testing.T, ns *netmodel.NS, name string) *dns.Msg {
	t.Helper()
	r, err := tryAskFrom(ns, name)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func tryAskFrom(ns *netmodel.NS, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.SetEdns0(1232, false)
	var r *dns.Msg
	var qerr error
	if err := ns.Do(func() error {
		r, _, qerr = (&dns.Client{Timeout: 20 * time.Second}).Exchange(m, net.JoinHostPort(nodeResolverIP, "53"))
		return nil
	}); err != nil {
		return nil, err
	}
	return r, qerr
}

// metric reads one counter of the agent's /metrics (0 when absent).
func (c *cluster) metric(name string) float64 {
	_, body, err := c.get("/metrics")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// TestClusterUnknownClient: in cluster mode, a pod the API server does not
// know is refused (REFUSED, EDE 18 "egressd: unknown client"); a pod that
// appears in the API (its podIP set) while its query waits for the informer
// is decided under its policies; the node itself is still served.
func TestClusterUnknownClient(t *testing.T) {
	c := newCluster(t)
	// The db pod leaves the API (at once: no kubelet confirms a graceful
	// deletion): its address belongs to no workload.
	zero := int64(0)
	if err := c.cs.CoreV1().Pods("shop").Delete(c.ctx, "db", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	p := c.startAgent("--unknown-client-wait", "5s")
	c.waitReady(p)

	r := askFrom(t, c.db.NS, "api.example.com")
	if e := ede(r); r.Rcode != dns.RcodeRefused || e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited || e.ExtraText != "egressd: unknown client" {
		t.Fatalf("unknown pod: %s EDE %v, want REFUSED with EDE 18 \"egressd: unknown client\"", dns.RcodeToString[r.Rcode], e)
	}

	// db comes back as an app=web pod (web-egress: lookups Enforce, only
	// api.example.com) while its lookup of evil.example.com waits.
	type result struct {
		r   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := tryAskFrom(c.db.NS, "evil.example.com")
		done <- result{r, err}
	}()
	waitFor(t, 20*time.Second, "the query waits for the informer", func() bool { return c.metric("egressd_dns_unknown_waits_total") >= 2 })
	e := &env{t: t, ctx: c.ctx, cs: c.cs, dyn: c.dyn}
	e.pod("shop", "db-2", "node-1", map[string]string{"app": "web"}, c.db.IPv4.String())
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r = res.r
	t.Logf("pod created while its query waited: evil.example.com %s EDE %v", dns.RcodeToString[r.Rcode], ede(r))
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("evil.example.com from the new pod: %s, want NXDOMAIN (lookups Enforce of web-egress)", dns.RcodeToString[r.Rcode])
	}
	if r := askFrom(t, c.db.NS, "api.example.com"); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("api.example.com from the new pod: %s", dns.RcodeToString[r.Rcode])
	}

	// A node process (hostNetwork) is served without policy.
	if r := askFrom(t, c.node.NS, "evil.example.com"); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("node process: evil.example.com %s, want NOERROR (no policy)", dns.RcodeToString[r.Rcode])
	}
	if got := c.metric("egressd_dns_unknown_refused_total"); got != 1 {
		t.Fatalf("egressd_dns_unknown_refused_total %v, want 1", got)
	}
}

// ede returns r's Extended DNS Error option, or nil.
func ede(r *dns.Msg) *dns.EDNS0_EDE {
	if o := r.IsEdns0(); o != nil {
		for _, op := range o.Option {
			if e, ok := op.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}
