package scale

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/testenv"
)

// Upstream is a DNS server on loopback that answers every A question with
// 192.0.2.1 and counts the queries it gets (the agent's upstream: its count at
// idle is the agent's idle upstream traffic).
type Upstream struct {
	Addr    string
	Queries atomic.Int64
	srv     *dns.Server
}

// StartUpstream starts an Upstream on a free UDP port of 127.0.0.1.
func StartUpstream() (*Upstream, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &Upstream{Addr: pc.LocalAddr().String()}
	u.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.Queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(192, 0, 2, 1)})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = u.srv.ActivateAndServe() }()
	return u, nil
}

// Close stops the server.
func (u *Upstream) Close() { _ = u.srv.Shutdown() }

// Agent is an egressd binary running in cluster mode for one node with
// --dataplane none (the resolver, the source, the compiler and the status
// writer run; no kernel is touched).
type Agent struct {
	Node     string
	HTTPAddr string
	DNSAddr  string
	Logs     *testenv.SyncBuffer
	Started  time.Time
	cmd      *exec.Cmd
	exited   chan struct{}
}

// StartAgent starts bin for node against the API server of kubeconfig,
// forwarding to upstream, with extra flags appended.
func StartAgent(bin, kubeconfig, node, upstream string, extra ...string) (*Agent, error) {
	httpAddr, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	dnsAddr, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig", kubeconfig,
		"--node-name", node,
		"--lease-namespace", "default",
		"--dataplane", "none",
		"--listen", dnsAddr,
		"--upstream", upstream,
		"--http-addr", httpAddr,
		"--state-file", "",
		"--log-level", "warn",
	}, extra...)
	a := &Agent{Node: node, HTTPAddr: httpAddr, DNSAddr: dnsAddr, Logs: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.Logs, a.Logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.Started = time.Now()
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	return a, nil
}

func freePort(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Stop terminates the agent (SIGTERM, then SIGKILL after 15 s).
func (a *Agent) Stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
}

// WaitReady waits until /readyz answers 200 and returns the time since the
// process started.
func (a *Agent) WaitReady(ctx context.Context) (time.Duration, error) {
	for {
		select {
		case <-a.exited:
			return 0, fmt.Errorf("agent %s exited: %v\n%s", a.Node, a.cmd.ProcessState, tail(a.Logs.String(), 4000))
		case <-ctx.Done():
			return 0, fmt.Errorf("agent %s not ready: %w\n%s", a.Node, ctx.Err(), tail(a.Logs.String(), 4000))
		default:
		}
		resp, err := http.Get("http://" + a.HTTPAddr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(a.Started), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// RSS returns the resident set size of the agent in bytes.
func (a *Agent) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// CPU returns the user+system CPU time the agent used so far.
func (a *Agent) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", a.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields after ")": state is [0]; utime is field 14 of stat, [11] here.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc stat")
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // USER_HZ = 100
}

// Lookup asks the agent's resolver for an A record of name from the source
// address src (a loopback address: 127.0.0.0/8 is all local) and returns the
// reply's rcode.
func (a *Agent) Lookup(src netip.Addr, name string) (int, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second,
		Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: src.AsSlice()}}}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, a.DNSAddr)
	if err != nil {
		return -1, err
	}
	return r.Rcode, nil
}

// Metric returns the value of an unlabelled metric from /metrics.
func (a *Agent) Metric(name string) (float64, error) {
	resp, err := http.Get("http://" + a.HTTPAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// StatusTime returns how long one GET /status takes.
func (a *Agent) StatusTime() (time.Duration, int, error) {
	start := time.Now()
	resp, err := http.Get("http://" + a.HTTPAddr + "/status")
	if err != nil {
		return 0, 0, err
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("/status: %s", resp.Status)
	}
	return time.Since(start), int(n), nil
}
