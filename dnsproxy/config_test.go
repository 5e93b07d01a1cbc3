package dnsproxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"minimal", Config{Upstreams: []string{"10.96.0.10"}}, nil},
		{"no-upstream", Config{}, []string{"Upstreams: at least one upstream is required"}},
		{"bad-upstream", Config{Upstreams: []string{"10.0.0.1:99999", ":53"}}, []string{"port \"99999\" out of range", "has no host"}},
		{"bad-listen", Config{Listen: []string{"localhost:53"}, Upstreams: []string{"1.1.1.1"}}, []string{"Listen: \"localhost:53\" is not an IP:port"}},
		{"ttl-order", Config{Upstreams: []string{"1.1.1.1"}, MinTTL: time.Hour, MaxTTL: time.Minute}, []string{"MinTTL: 1h0m0s exceeds MaxTTL 1m0s"}},
		{"fractional-ttl", Config{Upstreams: []string{"1.1.1.1"}, SetGrace: 1500 * time.Millisecond}, []string{"SetGrace: 1.5s is not a whole number of seconds"}},
		{"negative", Config{Upstreams: []string{"1.1.1.1"}, MinSetTTL: -time.Second, RateBurst: -1}, []string{"MinSetTTL: negative", "RateBurst: negative"}},
		{"timeouts", Config{Upstreams: []string{"1.1.1.1"}, Timeout: 10 * time.Second, QueryTimeout: time.Second}, []string{"Timeout: 10s exceeds QueryTimeout 1s"}},
		{"block-mode", Config{Upstreams: []string{"1.1.1.1"}, BlockMode: "drop"}, []string{"BlockMode: \"drop\""}},
		{"sinkhole-family", Config{Upstreams: []string{"1.1.1.1"}, SinkholeIPv4: netip.MustParseAddr("::1"), SinkholeIPv6: netip.MustParseAddr("10.0.0.1")}, []string{"SinkholeIPv4", "SinkholeIPv6"}},
		{"udp-size", Config{Upstreams: []string{"1.1.1.1"}, MaxUDPSize: 100}, []string{"MaxUDPSize: 100 is below 512"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	s, err := compile(Config{Upstreams: []string{"10.96.0.10", "[fd00::10]:5353"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.upstreams; len(got) != 2 || got[0] != "10.96.0.10:53" || got[1] != "[fd00::10]:5353" {
		t.Errorf("upstreams %v", got)
	}
	if s.listen[0].String() != "169.254.20.10:53" || s.BlockMode != BlockNXDomain || s.SinkholeIPv4.String() != "0.0.0.0" || s.SinkholeIPv6.String() != "::" {
		t.Errorf("defaults %+v", s.Config)
	}
	if s.setTimeout(300) != 310 || s.setTimeout(0) != 15 {
		t.Errorf("set timeouts %d %d", s.setTimeout(300), s.setTimeout(0))
	}
	if m, err := ParseBlockMode("Sinkhole"); err != nil || m != BlockSinkhole {
		t.Errorf("ParseBlockMode: %v %v", m, err)
	}
}
