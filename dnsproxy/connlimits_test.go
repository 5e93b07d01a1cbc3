package dnsproxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Tests of the connection and fair-share limits (issue 17 items 5 and 6),
// with real sockets on loopback.

// dialTCP opens a TCP connection to h from a source address.
func dialTCP(t *testing.T, h *harness, from netip.Addr) *dns.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &dns.Conn{Conn: c}
}

// askNew opens a connection from a source address and asks on it: a
// connection reset at once may fail the dial or the query.
func askNew(h *harness, from netip.Addr, name string) (*dns.Msg, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return askOn(&dns.Conn{Conn: c}, name)
}

// askOn sends one A query on an open connection and reads the reply.
func askOn(c *dns.Conn, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c.SetDeadline(time.Now().Add(4 * time.Second))
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	r, err := c.ReadMsg()
	if err == nil && r.Id != m.Id {
		return nil, errors.New("reply to another query")
	}
	return r, err
}

// waitFor polls cond (no timing is asserted: a bound on the wait only).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func longTCP(c *Config) {
	c.TCPReadTimeout, c.TCPIdleTimeout = 30*time.Second, 30*time.Second
}

func TestTCPConnectionsPerClientAreBounded(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { longTCP(c); c.TCPMaxConnsPerClient = 3 })
	var held []*dns.Conn
	for i := 0; i < 3; i++ {
		c := dialTCP(t, h, gatewayIP)
		if r, err := askOn(c, "api.test"); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("connection %d within the limit: %v %v", i, r, err)
		}
		held = append(held, c)
	}
	// The fourth is reset as soon as it is accepted.
	if r, err := askNew(h, gatewayIP, "api.test"); err == nil {
		t.Fatalf("connection over the per-client limit answered: %v", r)
	}
	// Another client is not affected.
	if r, err := askOn(dialTCP(t, h, runnerIP), "api.test"); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("other client: %v %v", r, err)
	}
	st := h.srv.Stats()
	if st.TCPRejectedClient != 1 || st.TCPRejectedGlobal != 0 || st.TCPAccepted != 4 {
		t.Errorf("stats %+v", st)
	}
	// A closed connection gives its slot back.
	held[0].Close()
	waitFor(t, "the slot back", func() bool { return h.srv.Stats().TCPOpen == 3 })
	if r, err := askOn(dialTCP(t, h, gatewayIP), "api.test"); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after a close: %v %v", r, err)
	}
}

// At the global limit, a new connection of a client with fewer connections
// takes the slot of the oldest connection of the client holding the most;
// among equals it is reset.
func TestTCPConnectionsGlobalLimit(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) {
		longTCP(c)
		c.TCPMaxConns, c.TCPMaxConnsPerClient = 4, -1
	})
	if tcp, _ := h.srv.Limits(); tcp != 4 {
		t.Fatalf("TCP limit in force %d, want 4", tcp)
	}
	var held []*dns.Conn
	for i := 0; i < 4; i++ {
		c := dialTCP(t, h, gatewayIP)
		if _, err := askOn(c, "api.test"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	// Another client gets in: the flooding client's oldest connection goes.
	if r, err := askOn(dialTCP(t, h, runnerIP), "api.test"); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("other client at the global limit: %v %v", r, err)
	}
	if r, err := askOn(held[0], "api.test"); err == nil {
		t.Errorf("evicted connection still answered: %v", r)
	}
	if r, err := askOn(held[3], "api.test"); err != nil {
		t.Errorf("newest connection of the flooding client: %v %v", r, err)
	}
	// The flooding client, now with 3 of the 4, cannot take more.
	if r, err := askNew(h, gatewayIP, "api.test"); err == nil {
		t.Fatalf("connection over the global limit answered: %v", r)
	}
	if st := h.srv.Stats(); st.TCPRejectedGlobal != 1 || st.TCPEvicted != 1 || st.TCPOpen != 4 || st.TCPClients != 2 {
		t.Errorf("stats %+v", st)
	}
	// UDP is not affected.
	if r := h.query(t, runnerIP, "udp", "api.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("UDP: %v", r)
	}
}

// An empty message ("00 00") is read, not answered: it must not keep an
// idle connection open. The client sends one every 200 ms, well within the
// idle timeout of 1 s; the connection must still be closed by the server.
// Before, every empty message restarted the idle timeout (128 of them: the
// miekg/dns per-connection cap, i.e. about 21 minutes at the default 10 s).
func TestTCPEmptyMessagesDoNotResetIdleTimeout(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) {
		c.TCPReadTimeout, c.TCPIdleTimeout = time.Second, time.Second
	})
	c := dialTCP(t, h, gatewayIP)
	if r, err := askOn(c, "api.test"); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("first query: %v %v", r, err)
	}
	closed := make(chan error, 1)
	go func() {
		var b [1]byte
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := c.Conn.Read(b[:])
		closed <- err
	}()
	c.SetWriteDeadline(time.Time{})
	for sent := 0; sent < 40; sent++ {
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no close from the server: %v", err)
			}
			if st := h.srv.Stats(); st.TCPIdleClosed != 1 {
				t.Errorf("stats %+v", st)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		c.Conn.Write([]byte{0, 0}) // an error: closed since; reported above
	}
	t.Fatal("connection still open after 40 empty messages sent within the idle timeout")
}

// A client that pipelines past TCPMaxQueries gets exactly TCPMaxQueries
// replies, then end of file: not a reset that could lose replies.
func TestTCPMaxQueriesClosesCleanly(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 60))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { longTCP(c); c.TCPMaxQueries = 5 })
	c := dialTCP(t, h, gatewayIP)
	var batch []byte
	for i := 0; i < 40; i++ {
		m := new(dns.Msg)
		m.SetQuestion("api.test.", dns.TypeA)
		m.Id = uint16(100 + i)
		b, _ := m.Pack()
		batch = binary.BigEndian.AppendUint16(batch, uint16(len(b)))
		batch = append(batch, b...)
	}
	if _, err := c.Conn.Write(batch); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ids []uint16
	var err error
	for {
		var r *dns.Msg
		if r, err = c.ReadMsg(); err != nil {
			break
		}
		ids = append(ids, r.Id)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "EOF") {
		t.Errorf("connection ended with %v, want end of file", err)
	}
	if len(ids) != 5 || ids[0] != 100 || ids[4] != 104 {
		t.Errorf("replies %v, want the first 5", ids)
	}
	if st := h.srv.Stats(); st.TCPDrained != 1 {
		t.Errorf("stats %+v", st)
	}
}

// One client whose queries hang (a silent upstream zone) takes at most
// MaxInflightPerClient of the in-flight slots: another client is answered.
// Before, the cap was global only, and the slow client took all of it.
func TestSlowClientDoesNotTakeOthersInflight(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	up := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		if strings.HasPrefix(q.Question[0].Name, "slow-") {
			<-release // silent until the test ends
		}
		answerA("192.0.2.1", 60)(w, q)
	})
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) {
		c.Timeout, c.QueryTimeout = 20*time.Second, 20*time.Second
		c.MaxInflight, c.MaxInflightPerClient = 6, 4
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the upstream's and the resolver's
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.tryQuery(gatewayIP, "udp", "slow-"+string(rune('a'+i))+".test", dns.TypeA, false)
			if err == nil && r.Rcode == dns.RcodeRefused {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	waitFor(t, "the slow client's 8 queries in flight or refused", func() bool {
		st := h.srv.Stats()
		return uint64(st.Inflight)+st.Overloaded+st.ClientOverloaded == 8
	})
	if r := h.query(t, runnerIP, "udp", "api.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("other client: %s", dns.RcodeToString[r.Rcode])
	}
	if r := h.query(t, runnerIP, "tcp", "www.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Errorf("other client over TCP: %s", dns.RcodeToString[r.Rcode])
	}
	once.Do(func() { close(release) })
	wg.Wait()
	if refused != 4 {
		t.Errorf("slow client: %d refused, want 4", refused)
	}
	if st := h.srv.Stats(); st.Overloaded != 0 || st.ClientOverloaded != 4 {
		t.Errorf("stats %+v", st)
	}
}

// udpClient is a raw UDP socket of one client, for counting replies.
type udpClient struct {
	c *net.UDPConn
}

func newUDPClient(t *testing.T, h *harness, from netip.Addr) *udpClient {
	t.Helper()
	dst, err := net.ResolveUDPAddr("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: from.AsSlice()}, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{c}
}

func (u *udpClient) send(t *testing.T, id uint16, name string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id = id
	b, _ := m.Pack()
	if _, err := u.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// until reads replies until the one with id arrives.
func (u *udpClient) until(t *testing.T, id uint16) []*dns.Msg {
	t.Helper()
	var out []*dns.Msg
	buf := make([]byte, 65535)
	u.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := u.c.Read(buf)
		if err != nil {
			t.Fatalf("reading replies: %v (got %d)", err, len(out))
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("reply: %v", err)
		}
		out = append(out, r)
		if r.Id == id {
			return out
		}
	}
}

// Over its rate, a client gets REFUSED from the read loop: on the fast path
// (cache hits) as on the slow one, with its ID and question.
func TestRateLimitOnFastPath(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 300))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.RateLimit, c.RateBurst = 1, 5 })
	h.query(t, runnerIP, "udp", "api.test", dns.TypeA, false) // cached
	u := newUDPClient(t, h, gatewayIP)
	for i := 0; i < 20; i++ {
		u.send(t, uint16(1000+i), "api.test")
	}
	replies := u.until(t, 1019)
	answered, refused := 0, 0
	for _, r := range replies {
		switch {
		case r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1:
			answered++
		case r.Rcode == dns.RcodeRefused && len(r.Question) == 1 && r.Question[0].Name == "api.test." && r.Response:
			refused++
		default:
			t.Errorf("reply %v", r)
		}
	}
	if answered != 5 || refused != 15 {
		t.Errorf("%d answered, %d refused; want 5 and 15", answered, refused)
	}
	st := h.srv.Stats()
	if st.RateLimited != 15 || h.srv.fast.hits.Load() != 5 {
		t.Errorf("stats %+v, fast hits %d", st, h.srv.fast.hits.Load())
	}
	// A response sent to the resolver over the rate gets nothing back.
	r := new(dns.Msg)
	r.SetQuestion("api.test.", dns.TypeA)
	r.Response, r.Id = true, 7
	b, _ := r.Pack()
	u.c.Write(b)
	u.send(t, 8, "api.test")
	if got := u.until(t, 8); len(got) != 1 {
		t.Errorf("replies to a response over the rate: %v", got)
	}
}

// The same answer to the same client over RRLRate: every RRLSlip-th is sent
// truncated (empty, TC), the others are dropped; TCP is exempt. Replies of
// one client's cache hits come back in order (one socket, one read loop), so
// the dropped ones are counted without waiting for anything.
func TestRRLSameAnswerSameClient(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.1", 300))
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.RRLRate, c.RRLSlip = 3, 2 })
	h.query(t, runnerIP, "udp", "api.test", dns.TypeA, false) // cached
	h.query(t, runnerIP, "udp", "www.test", dns.TypeA, false)
	u := newUDPClient(t, h, gatewayIP)
	for i := 0; i < 10; i++ {
		u.send(t, uint16(2000+i), "api.test")
	}
	u.send(t, 3000, "www.test") // another answer: within its own rate
	full, tc := 0, 0
	for _, r := range u.until(t, 3000) {
		switch {
		case r.Id == 3000:
		case r.Truncated && len(r.Answer) == 0 && r.Question[0].Name == "api.test.":
			tc++
		case !r.Truncated && len(r.Answer) == 1:
			full++
		default:
			t.Errorf("reply %v", r)
		}
	}
	if full != 3 || tc != 3 {
		t.Errorf("%d answered, %d truncated; want 3 and 3 (and 4 dropped)", full, tc)
	}
	if st := h.srv.Stats(); st.RRLTruncated != 3 || st.RRLDropped != 4 {
		t.Errorf("stats %+v", st)
	}
	// The truncated client retries over TCP: answered.
	if r := h.query(t, gatewayIP, "tcp", "api.test", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("TCP: %v", r)
	}
	// Other clients have their own buckets.
	if r := h.query(t, gateway1, "udp", "api.test", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("other client: %v", r)
	}
}

func TestFDBudget(t *testing.T) {
	for _, tc := range []struct {
		nofile            uint64
		reserve           int
		tcp, inflight     int
		wantTCP, wantInfl int
	}{
		{1024, 256, 4096, 4096, 384, 384},
		{1 << 20, 256, 4096, 4096, 4096, 4096},
		{1 << 63, 256, 4096, 4096, 4096, 4096}, // RLIM_INFINITY
		{300, 256, 4096, 4096, 22, 22},
		{100, 256, 4096, 4096, 1, 1},
		{1 << 20, 256, 0, 0, (1<<20 - 256) / 2, (1<<20 - 256) / 2},
	} {
		tcp, infl := withinBudget(tc.tcp, tc.inflight, tc.nofile, tc.reserve)
		if tcp != tc.wantTCP || infl != tc.wantInfl {
			t.Errorf("withinBudget(%d, %d, nofile %d, reserve %d) = %d, %d; want %d, %d",
				tc.tcp, tc.inflight, tc.nofile, tc.reserve, tcp, infl, tc.wantTCP, tc.wantInfl)
		}
	}
}

// emfileListener fails its first accepts with EMFILE, as a listener does when
// the process is out of descriptors.
type emfileListener struct {
	net.Listener
	fails int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", unix.EMFILE)}
	}
	return l.Listener.Accept()
}

// Out of descriptors, accepting backs off and retries (counted) instead of
// handing the error to the server; other errors end Accept.
func TestAcceptRetriesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &Server{s: &settings{}}
	tl := &tcpListener{Listener: &emfileListener{Listener: ln, fails: 3}, srv: srv, idle: time.Second}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := tl.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	got.Close()
	if n := srv.st.tcpAcceptErrors.Load(); n != 3 {
		t.Errorf("accept errors counted %d, want 3", n)
	}
	tl.Close()
	if _, err := tl.Accept(); err == nil {
		t.Error("Accept on a closed listener succeeded")
	}
}

// The per-packet cost of the limits on the fast path: one token from the
// client's bucket and, for a reply, one from its RRL bucket (1,000 clients,
// in parallel).
func BenchmarkLimitsPerPacket(b *testing.B) {
	s := &settings{Config: Config{RateLimit: 1e9, RateBurst: 1e9, RateClients: 65536, RRLRate: 1e9, RRLSlip: 2}}
	rl, _ := newRateLimiter(s)
	r, _ := newRRL(s)
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8 & 3), byte(i)})
			rl.allow(c, now)
			r.check(c, "api.example.com.", dns.TypeA, dns.RcodeSuccess, now)
			i++
		}
	})
}
