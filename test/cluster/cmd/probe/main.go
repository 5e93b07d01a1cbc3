// Command probe is the test client and server of test/cluster's pods (a static
// binary in a one-file image; an agnhost stand-in):
//
//	probe serve [-http :80]          HTTP server answering "ok <hostname> <remote>"
//	probe idle                       sleep until SIGTERM (a client pod's main process)
//	probe dns [-server A] [-type T] [-tcp] NAME
//	                                 one lookup (default server: /etc/resolv.conf's first)
//	probe http [-timeout D] URL      one GET
//	probe watch [-every D] ADDR      connect to ADDR (TCP) every D until SIGTERM, one
//	                                 line per attempt: "<unix ms> ok|fail"
//
// dns and http print one JSON object (Result) and exit 0 whatever the outcome, so that
// tests read timeouts and refusals as data.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Result is what dns and http print.
type Result struct {
	// Server is the DNS server asked.
	Server string `json:"server,omitempty"`
	// Rcode is the DNS response code name (NOERROR, NXDOMAIN, ...).
	Rcode string `json:"rcode,omitempty"`
	// Answers are the A/AAAA addresses of the answer.
	Answers []string `json:"answers,omitempty"`
	// EDE are the extended DNS errors of the response (RFC 8914) as "code: text".
	EDE []string `json:"ede,omitempty"`
	// Status and Body are the HTTP response's.
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	// Err is the error, if the exchange failed (a timeout, a refused connection).
	Err string `json:"err,omitempty"`
	// Millis is how long the exchange took.
	Millis int64 `json:"ms"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe serve|idle|dns|http ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		addr := fs.String("http", ":80", "listen address")
		_ = fs.Parse(args)
		serve(*addr)
	case "idle":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
	case "dns":
		fs := flag.NewFlagSet("dns", flag.ExitOnError)
		server := fs.String("server", "", "server IP:port (default: the first nameserver of /etc/resolv.conf)")
		qtype := fs.String("type", "A", "query type")
		tcp := fs.Bool("tcp", false, "query over TCP")
		timeout := fs.Duration("timeout", 3*time.Second, "timeout")
		_ = fs.Parse(args)
		emit(lookup(*server, fs.Arg(0), *qtype, *tcp, *timeout))
	case "http":
		fs := flag.NewFlagSet("http", flag.ExitOnError)
		timeout := fs.Duration("timeout", 3*time.Second, "timeout")
		_ = fs.Parse(args)
		emit(get(fs.Arg(0), *timeout))
	case "watch":
		fs := flag.NewFlagSet("watch", flag.ExitOnError)
		every := fs.Duration("every", 50*time.Millisecond, "interval")
		_ = fs.Parse(args)
		watch(fs.Arg(0), *every)
	default:
		fmt.Fprintln(os.Stderr, "probe: unknown command", os.Args[1])
		os.Exit(2)
	}
}

func emit(r Result) {
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s %s\n", host, r.RemoteAddr)
	})
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		os.Exit(0)
	}()
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "probe serve:", err)
		os.Exit(1)
	}
}

func lookup(server, name, qtype string, tcp bool, timeout time.Duration) Result {
	start := time.Now()
	var res Result
	defer func() { res.Millis = time.Since(start).Milliseconds() }()
	if server == "" {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cc.Servers) == 0 {
			res.Err = fmt.Sprintf("no nameserver in /etc/resolv.conf: %v", err)
			return res
		}
		server = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	res.Server = server
	t, ok := dns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		res.Err = "unknown type " + qtype
		return res
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	m.SetEdns0(1232, false)
	c := &dns.Client{Timeout: timeout}
	if tcp {
		c.Net = "tcp"
	}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.Rcode = dns.RcodeToString[r.Rcode]
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			res.Answers = append(res.Answers, rr.A.String())
		case *dns.AAAA:
			res.Answers = append(res.Answers, rr.AAAA.String())
		}
	}
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				res.EDE = append(res.EDE, fmt.Sprintf("%d: %s", e.InfoCode, e.ExtraText))
			}
		}
	}
	return res
}

func get(url string, timeout time.Duration) (res Result) {
	start := time.Now()
	defer func() { res.Millis = time.Since(start).Milliseconds() }()
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	res.Status = resp.StatusCode
	res.Body = strings.TrimSpace(string(b))
	return res
}

func watch(addr string, every time.Duration) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-sigs:
			return
		case <-t.C:
		}
		verdict := "ok"
		c, err := net.DialTimeout("tcp", addr, every)
		if err != nil {
			verdict = "fail"
		} else {
			c.Close()
		}
		fmt.Printf("%d %s\n", time.Now().UnixMilli(), verdict)
	}
}
