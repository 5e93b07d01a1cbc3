package e2e

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/test/netmodel"
	"github.com/miekg/dns"
)

// malformed returns one hostile or broken datagram of kind k.
func malformed(rng *rand.Rand, k int) []byte {
	switch k % 8 {
	case 0: // random bytes
		b := make([]byte, rng.IntN(600))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	case 1: // shorter than a header
		return make([]byte, rng.IntN(12))
	case 2: // a response (QR set): must be dropped
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		m.Response = true
		b, _ := m.Pack()
		return b
	case 3: // header claims 5 questions, carries one
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		b, _ := m.Pack()
		binary.BigEndian.PutUint16(b[4:], 5)
		return b
	case 4: // compression pointer loop
		b := make([]byte, 12, 32)
		binary.BigEndian.PutUint16(b[4:], 1)
		return append(b, 0xc0, 12, 0, 1, 0, 1)
	case 5: // label longer than the message
		b := make([]byte, 12, 32)
		binary.BigEndian.PutUint16(b[4:], 1)
		return append(b, 63, 'a', 'b')
	case 6: // unknown opcode
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		m.Opcode = 9
		b, _ := m.Pack()
		return b
	default: // a valid header and question with records in the answer section
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		rr, _ := dns.NewRR("api.example.com. 60 IN A 6.6.6.6")
		m.Answer = append(m.Answer, rr)
		b, _ := m.Pack()
		return b
	}
}

// TestMalformedFlood floods the agent with malformed datagrams (and junk over TCP)
// from the external peer at full speed while the pod asks well-formed questions: every
// question gets its answer (a stub resolver's retry allowed) and the agent survives.
func TestMalformedFlood(t *testing.T) {
	w := newWorld(t)
	a := w.startAgent(agentOpts{})

	const floodUDP, floodTCP = 4, 1
	var conns []net.Conn
	err := w.ext.Do(func() error {
		for i := 0; i < floodUDP; i++ {
			c, err := net.Dial("udp", resolverAddr)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var sent, tcpConns atomic.Int64
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Write(malformed(rng, k)) // ECONNREFUSED etc. are fine
				sent.Add(1)
				if k%100 == 99 { // ~5,000 datagrams/s per sender: high, but within what 2 cores can read
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for i := 0; i < floodTCP; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(100+i), 7))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				var c net.Conn
				w.ext.Do(func() (err error) { c, err = net.DialTimeout("tcp", resolverAddr, time.Second); return err })
				if c == nil {
					continue
				}
				b := malformed(rng, k)
				pre := binary.BigEndian.AppendUint16(nil, uint16(len(b)+rng.IntN(3)*100)) // lengths that lie, too
				c.SetDeadline(time.Now().Add(200 * time.Millisecond))
				c.Write(append(pre, b...))
				c.Close()
				tcpConns.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}

	const n = 250
	names := []string{"api.example.com", "x.wild.example.com", "c.deep.example.com", "alias.example.com"}
	var retried, failed int
	start := time.Now()
	err = w.pod.Do(func() error {
		c := &dns.Client{Timeout: time.Second}
		for i := 0; i < n; i++ {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(names[i%len(names)]), dns.TypeA)
			ok := false
			for try := 0; try < 3 && !ok; try++ {
				if try > 0 {
					retried++
				}
				r, _, err := c.Exchange(m, resolverAddr)
				ok = err == nil && r.Rcode == dns.RcodeSuccess && len(netmodel.AnswerAddrs(r)) > 0
			}
			if !ok {
				failed++
			}
			time.Sleep(20 * time.Millisecond) // spread the questions over the flood
		}
		return nil
	})
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	rate := float64(sent.Load()) / elapsed.Seconds()
	t.Logf("flood: %d malformed datagrams (%.0f/s) and %d junk TCP connections during %d well-formed queries: %d unanswered, %d retries",
		sent.Load(), rate, tcpConns.Load(), n, failed, retried)
	select {
	case <-a.Exited:
		t.Fatalf("the agent died under the flood:\n%s", netmodel.Tail(a.Out.String(), 3000))
	default:
	}
	if failed > 0 {
		t.Fatalf("%d/%d well-formed queries unanswered under the flood", failed, n)
	}
	// Still answering after the flood.
	wantRcode(t, w.query("udp", "api.example.com", dns.TypeA), dns.RcodeSuccess, "after the flood")
}
