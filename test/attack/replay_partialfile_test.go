package attack

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestReplayPartialFile replays issue 17 item 3: the policies file, then the
// workloads file, is cut to 0 bytes (what a non-atomic writer leaves for a
// moment). The agent must keep the last good content in force and say so in
// /status (sync.lastError or sync.reload.lastError): the pod's lookup of a
// denied name stays blocked. Before the fix (main 8ff4d7d) the empty file
// removed every policy (or every workload) and the pod got the pool's address.
func TestReplayPartialFile(t *testing.T) {
	for _, file := range []string{"policies", "workloads"} {
		t.Run(file, func(t *testing.T) {
			w := New(t, Config{Zone: unknownZone, Policies: denyMiningPolicies})
			a := w.StartAgent(AgentOptions{})
			pod := w.Pods[0]
			if r := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Fatalf("before the cut: pool.minepool.test %s, want NXDOMAIN", Rcode(r))
			}
			w.WriteFile(file+".yaml", "")
			// Wait until the agent has read the empty file: it either
			// dropped the file's objects or reports the partial write.
			var sync map[string]any
			reacted := false
			for range 200 {
				sync, _ = a.Status()["sync"].(map[string]any)
				n, _ := sync[file].(float64)
				reload, _ := sync["reload"].(map[string]any)
				le, _ := sync["lastError"].(string)
				rle, _ := reload["lastError"].(string)
				if le != "" || rle != "" || n == 0 {
					reacted = true
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			r := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA)
			t.Logf("after %s.yaml cut to 0 bytes: /status sync %v; pool.minepool.test %s answer %v", file, sync, Rcode(r), AnswerAddrs(r))
			if !reacted {
				t.Fatalf("the agent neither dropped the %s nor reported an error within 20 s: %v", file, sync)
			}
			if n, _ := sync[file].(float64); n == 0 {
				t.Errorf("/status %s = 0 after a 0-byte %s file", file, file)
			}
			if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
				t.Errorf("pool.minepool.test %s %v after the 0-byte %s file, want NXDOMAIN (last good content kept)", Rcode(r), AnswerAddrs(r), file)
			}
		})
	}
}
