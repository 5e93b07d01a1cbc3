package agent

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFlagsDefaultsAndValidation(t *testing.T) {
	c, err := ParseFlags([]string{"--policies", "p.yaml"}, nil)
	if err != nil {
		t.Fatalf("minimal flags: %v", err)
	}
	if len(c.Listen) != 1 || c.Listen[0] != "169.254.20.10:53" {
		t.Errorf("default listen = %v, want 169.254.20.10:53", c.Listen)
	}
	if c.BlockedResponse != "nxdomain" || c.DefaultVerdict != "Allow" || c.Lookups != "Observe" || c.Dataplane != "nftables" {
		t.Errorf("defaults: %+v", c)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--policies", "p", "--blocked-response", "drop"}, "--blocked-response"},
		{[]string{"--policies", "p", "--dataplane", "iptables"}, "--dataplane"},
		{[]string{"--policies", "p", "--default-verdict", "deny"}, "--default-verdict"},
		{[]string{"--policies", "p", "--lookups", "Block"}, "--lookups"},
		{[]string{"--policies", "p", "--otlp-protocol", "udp"}, "--otlp-protocol"},
		{[]string{"--policies", "p", "--sinkhole", "nope"}, "--sinkhole"},
		{[]string{}, "--policies"},
		{[]string{"--policies", "p", "extra"}, "unexpected arguments"},
	}
	for _, b := range bad {
		_, err := ParseFlags(b.args, nil)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: error %v, want one naming %s", b.args, err, b.want)
		}
	}
}

func TestListFlagsAcceptRepeatsAndCommas(t *testing.T) {
	c, err := ParseFlags([]string{"--policies", "p", "--upstream", "10.0.0.1:53,10.0.0.2:53", "--upstream", "10.0.0.3:53", "--listen", "127.0.0.1:5353"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Upstreams, " ") != "10.0.0.1:53 10.0.0.2:53 10.0.0.3:53" || strings.Join(c.Listen, " ") != "127.0.0.1:5353" {
		t.Errorf("upstreams %v listen %v", c.Upstreams, c.Listen)
	}
	rc, err := c.resolverConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Upstreams) != 3 || !rc.SinkholeIPv4.IsValid() || !rc.SinkholeIPv6.IsValid() {
		t.Errorf("resolver config: %+v", rc)
	}
}

// TestUpstreamsFollowDNSService: without --upstream, cluster mode forwards to
// the cluster DNS Service's cluster IPs on port 53 (no hard-coded address);
// --upstream still wins.
func TestUpstreamsFollowDNSService(t *testing.T) {
	c := &Config{serviceUpstreams: serviceUpstreams([]netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("::ffff:10.96.0.11"), netip.MustParseAddr("fd00::a")})}
	ups, err := c.upstreams()
	if err != nil || strings.Join(ups, " ") != "10.96.0.10:53 10.96.0.11:53 [fd00::a]:53" {
		t.Errorf("upstreams %v (%v), want the Service's cluster IPs on port 53", ups, err)
	}
	c.Upstreams = []string{"10.0.0.1:53"}
	if ups, _ := c.upstreams(); strings.Join(ups, " ") != "10.0.0.1:53" {
		t.Errorf("upstreams with --upstream %v", ups)
	}
	if (&Agent{cfg: c}).clusterDNSUpstreams() != nil {
		t.Error("--upstream set: the Service is not consulted")
	}
}
