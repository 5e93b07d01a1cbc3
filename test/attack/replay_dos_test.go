package attack

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// dosZone: every name under world.test answers (a fresh name misses the cache).
const dosZone = `*.world.test. 60 IN A 192.0.2.10
`

// dosPods: the attacker (DefaultPod) and a victim on the same node, both
// unrestricted (no policy).
var dosPods = []netmodel.PodSpec{{Name: DefaultPod}, {Name: "builds/victim-0"}}

// TestReplayTCPExhaustion replays issue 17 item 5 with a bounded flood: the
// agent runs with 1,024 file descriptors (prlimit) and one pod opens 1,200
// TCP connections to the resolver, each sending an empty message (00 00),
// and holds them. Another pod's TCP query and /healthz must still be served.
// Before the fix (main 8ff4d7d) every connection took a descriptor until
// none were left: the victim's TCP query and /healthz timed out.
func TestReplayTCPExhaustion(t *testing.T) {
	testenv.RequireTools(t, "prlimit")
	w := New(t, Config{Zone: dosZone, Pods: dosPods, Policies: denyMiningPolicies})
	a := w.StartAgent(AgentOptions{Wrap: []string{"prlimit", "--nofile=1024"}})
	attacker, victim := w.Pods[0], w.Pods[1]
	const flood = 1200
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var dialErrs int
	err := attacker.Do(func() error {
		for range flood {
			c, err := net.DialTimeout("tcp", ResolverAddr, 2*time.Second)
			if err != nil {
				dialErrs++
				continue
			}
			c.Write([]byte{0, 0})
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every second an empty message on every connection, as the attack did,
	// while the victim asks.
	defer sendEmptyEverySecond(conns)()
	// Connections the agent closed (a limit) read EOF at once; held ones
	// time out. Read each with a short deadline after the whole flood.
	var closed int
	buf := make([]byte, 1)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closed++
			}
		}
	}
	tcpR, tcpErr := Query(victim.NS, ResolverAddr, "tcp", "v1.world.test", dns.TypeA)
	udpR, udpErr := Query(victim.NS, ResolverAddr, "udp", "v2.world.test", dns.TypeA)
	hcode, _, herr := a.Get("/healthz")
	t.Logf("attacker: %d connections opened (%d dial errors), %d closed by the agent; victim TCP: %v %v; victim UDP: %v %v; /healthz: %d %v",
		len(conns), dialErrs, closed, rcodeOf(tcpR), tcpErr, rcodeOf(udpR), udpErr, hcode, herr)
	if tcpErr != nil || tcpR.Rcode != dns.RcodeSuccess {
		t.Errorf("victim's TCP query with the attacker's %d connections open: %v %v", len(conns), rcodeOf(tcpR), tcpErr)
	}
	if udpErr != nil || udpR.Rcode != dns.RcodeSuccess {
		t.Errorf("victim's UDP query: %v %v", rcodeOf(udpR), udpErr)
	}
	if herr != nil || hcode != http.StatusOK {
		t.Errorf("/healthz: %d %v", hcode, herr)
	}
}

// TestReplayFairShare replays issue 17 item 6 with a bounded flood: one pod
// sends 8,000 queries for distinct names whose upstreams never answer (CoreDNS
// drops every query of slow.test on both upstreams, erratic plugin, so each
// holds a slot for two upstream timeouts) at about 2,000 a second from 8
// sockets; a second pod asks fresh names (20 at a time, at most 1,000 a
// second) while it runs. Both upstreams serve the same zones (as replicas of
// the cluster DNS do): the slow names mark the first one down now and then,
// and the victim's queries fail over to the second.
// None of the victim's queries may be refused or lost. Before the fix (main
// 8ff4d7d) the global in-flight cap (4,096) refused part of the victim's
// queries.
func TestReplayFairShare(t *testing.T) {
	w := New(t, Config{Zone: dosZone, Pods: dosPods, Policies: denyMiningPolicies, ExtraServerBlocks: `slow.test.:5300 {
  bind 127.0.0.1 127.0.0.2
  erratic {
    drop 1
  }
}
.:5300 {
  bind 127.0.0.2
  file $DIR/db.root .
}
`})
	a := w.StartAgent(AgentOptions{Upstreams: []string{UpstreamAddr, "127.0.0.2:5300"}})
	attacker, victim := w.Pods[0], w.Pods[1]
	const sockets, perSocket, workers = 8, 1000, 20
	const gap = 4 * time.Millisecond // per socket: 250 queries a second
	attackerRcodes := map[int]int{}
	var arMu sync.Mutex
	var attack sync.WaitGroup
	for s := range sockets {
		var pc net.PacketConn
		if err := attacker.Do(func() (err error) { pc, err = net.ListenPacket("udp", ":0"); return err }); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 4096)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				var r dns.Msg
				if r.Unpack(buf[:n]) == nil {
					arMu.Lock()
					attackerRcodes[r.Rcode]++
					arMu.Unlock()
				}
			}
		}()
		dst, _ := net.ResolveUDPAddr("udp", ResolverAddr)
		attack.Go(func() {
			for i := range perSocket {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("q%d-%d.slow.test.", s, i), dns.TypeA)
				b, _ := m.Pack()
				pc.WriteTo(b, dst)
				time.Sleep(gap)
			}
		})
	}
	// The victim asks fresh names as long as the attacker sends.
	attackDone := make(chan struct{})
	go func() { attack.Wait(); close(attackDone) }()
	var refused, lost, ok, other atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-attackDone:
					return
				default:
				}
				i := next.Add(1)
				time.Sleep(20 * time.Millisecond) // at most 1,000 queries a second in all
				r, err := Query(victim.NS, ResolverAddr, "udp", fmt.Sprintf("v%d.world.test", i), dns.TypeA)
				switch {
				case err != nil:
					lost.Add(1)
				case r.Rcode == dns.RcodeRefused:
					refused.Add(1)
				case r.Rcode == dns.RcodeSuccess:
					ok.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	arMu.Lock()
	t.Logf("attacker: %d queries; replies so far by rcode: %v", sockets*perSocket, attackerRcodes)
	arMu.Unlock()
	for _, l := range strings.Split(a.Metrics(), "\n") {
		if strings.HasPrefix(l, "egressd_dns_limited_total") || strings.HasPrefix(l, "egressd_dns_queries_total") {
			t.Log(l)
		}
	}
	asked := ok.Load() + refused.Load() + lost.Load() + other.Load()
	t.Logf("victim: %d queries during the attack: %d NOERROR, %d REFUSED, %d lost (5 s timeout), %d other",
		asked, ok.Load(), refused.Load(), lost.Load(), other.Load())
	if refused.Load() != 0 || lost.Load() != 0 || other.Load() != 0 {
		t.Errorf("the victim lost %d of %d queries to one pod's slow names", asked-ok.Load(), asked)
	}
}

func rcodeOf(r *dns.Msg) string {
	if r == nil {
		return "no answer"
	}
	return Rcode(r)
}
