package agent

import (
	"strings"
	"testing"
	"time"
)

// The limit flags reach the resolver: their defaults are the resolver's, and
// 0 ("off" on the command line) becomes the resolver's negative ("off"; its
// zero means "default").
func TestDNSLimitFlags(t *testing.T) {
	base := []string{"--policies", "p", "--upstream", "10.0.0.1:53"}
	c, err := ParseFlags(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.resolverConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.RateLimit != 4000 || rc.RateBurst != 8000 || rc.MaxInflight != 4096 || rc.MaxInflightPerClient != 512 ||
		rc.TCPMaxConns != 4096 || rc.TCPMaxConnsPerClient != 64 || rc.TCPMaxQueries != 128 ||
		rc.TCPIdleTimeout != 10*time.Second || rc.FDReserve != 256 || rc.RRLRate != 2000 || rc.RRLSlip != 2 {
		t.Errorf("defaults: %+v", rc)
	}
	c, err = ParseFlags(append(base, "--rate-limit", "0", "--max-inflight-per-client", "0", "--tcp-max-conns", "0",
		"--tcp-max-conns-per-client", "0", "--tcp-max-queries", "0", "--fd-reserve", "0", "--rrl-rate", "0", "--rrl-slip", "0",
		"--tcp-idle-timeout", "3s", "--max-inflight", "100"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc, err = c.resolverConfig(); err != nil {
		t.Fatal(err)
	}
	if rc.RateLimit >= 0 || rc.MaxInflightPerClient >= 0 || rc.TCPMaxConns >= 0 || rc.TCPMaxConnsPerClient >= 0 ||
		rc.TCPMaxQueries >= 0 || rc.FDReserve >= 0 || rc.RRLRate >= 0 || rc.RRLSlip >= 0 ||
		rc.TCPIdleTimeout != 3*time.Second || rc.MaxInflight != 100 {
		t.Errorf("off: %+v", rc)
	}
	for _, bad := range [][]string{{"--max-inflight", "0"}, {"--tcp-max-conns", "-1"}, {"--rrl-slip", "-2"}, {"--tcp-idle-timeout", "10ms"}} {
		if _, err := ParseFlags(append(base, bad...), nil); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: error %v, want one naming %s", bad, err, bad[0])
		}
	}
}

// TestUpstreamHealthIntervalFlag: --upstream-health-interval sets the period of
// the upstream probe (an idle agent's only upstream queries) and 0 turns it off.
func TestUpstreamHealthIntervalFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, time.Second},
		{[]string{"--upstream-health-interval", "30s"}, 30 * time.Second},
		{[]string{"--upstream-health-interval", "0"}, -1}, // dnsproxy: negative disables
	} {
		c, err := ParseFlags(append([]string{"--policies", "p"}, tc.args...), nil)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := c.resolverConfig()
		if err != nil {
			t.Fatal(err)
		}
		if rc.HealthInterval != tc.want {
			t.Errorf("%v: HealthInterval %s, want %s", tc.args, rc.HealthInterval, tc.want)
		}
	}
	if _, err := ParseFlags([]string{"--policies", "p", "--upstream-health-interval", "-1s"}, nil); err == nil || !strings.Contains(err.Error(), "--upstream-health-interval") {
		t.Errorf("negative interval: error %v", err)
	}
}
