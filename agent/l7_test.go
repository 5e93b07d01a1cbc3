package agent

import (
	"net/netip"
	"testing"
)

func TestTransparentProxyAddrs(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		v4, v6 string // "" for none
		err    bool
	}{
		{args: nil, v4: "169.254.20.10:15001"},
		{args: []string{"--transparent-proxy-addr", "[fd00::a9fe:140a]:15001"}, v6: "[fd00::a9fe:140a]:15001"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1,[fd00::1]:2"}, v4: "10.0.0.1:1", v6: "[fd00::1]:2"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1", "--transparent-proxy-addr", "[fd00::1]:2"}, v4: "10.0.0.1:1", v6: "[fd00::1]:2"},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:1,10.0.0.2:1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "[::ffff:10.0.0.1]:1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1"}, err: true},
		{args: []string{"--transparent-proxy-addr", "10.0.0.1:0"}, err: true},
	} {
		c, perr := ParseFlags(append([]string{"--policies", "p", "--transparent-proxy"}, tc.args...), nil)
		if (perr != nil) != tc.err {
			t.Errorf("%v: parseFlags: %v, want error=%v", tc.args, perr, tc.err)
			continue
		}
		if tc.err {
			continue // rejected at flag parsing, before the proxy starts
		}
		v4, v6, err := c.transparentAddrs()
		if verr := c.validateL7(); (verr != nil) != tc.err || (err != nil) != tc.err {
			t.Errorf("%v: errors %v / %v, want error=%v", tc.args, err, verr, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if fmtAP(v4) != tc.v4 || fmtAP(v6) != tc.v6 {
			t.Errorf("%v: %v %v, want %q %q", tc.args, v4, v6, tc.v4, tc.v6)
		}
		a := &Agent{cfg: c}
		if got, want := len(a.l7Exempt()), btoi(tc.v4 != "")+btoi(tc.v6 != ""); got != want {
			t.Errorf("%v: %d exempt addresses, want %d", tc.args, got, want)
		}
	}
}

func fmtAP(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
