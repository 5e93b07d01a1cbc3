package main

import (
	"testing"

	"github.com/egressd/egressd/dnsproxy/tunnel"
)

func TestTunnelDetectionFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want tunnel.Action
		err  bool
	}{
		{nil, tunnel.Alert, false},
		{[]string{"--tunnel-detection", "Off"}, tunnel.Off, false},
		{[]string{"--tunnel-detection=Block", "--tunnel-allow", "example.com"}, tunnel.Block, false},
		{[]string{"--tunnel-detection", "Maybe"}, tunnel.Off, true},
	} {
		c, err := parseFlags(append([]string{"--policies", t.TempDir()}, tc.args...), nil)
		if tc.err {
			if err == nil {
				t.Errorf("%v: no error", tc.args)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.TunnelDetection != tc.want {
			t.Errorf("%v: %v, want %v", tc.args, c.TunnelDetection, tc.want)
		}
	}
}
