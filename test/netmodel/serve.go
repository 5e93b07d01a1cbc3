package netmodel

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// ServeTCP serves ln (a listener the test opened, typically inside a
// namespace) until the test ends: every accepted connection is handled by
// handle in its own goroutine and closed after it.
func ServeTCP(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// ListenTCP listens on addr inside ns.
func ListenTCP(ns *NS, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	return ln, err
}

// CountInto is a ServeTCP handler that reads everything and adds the byte
// count to n (a sink that measures what got through).
func CountInto(n *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			k, err := c.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}
}

// ForwardTo is a ServeTCP handler that relays the connection to addr, dialled
// from the test process's own namespace, in both directions.
func ForwardTo(addr string) func(net.Conn) {
	return func(c net.Conn) {
		d, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer d.Close()
		go func() { io.Copy(d, c); d.(*net.TCPConn).CloseWrite() }()
		io.Copy(c, d)
	}
}

// HTTPClient returns an HTTP client whose connections are dialled inside ns
// (no keep-alives: every request dials anew).
func HTTPClient(ns *NS, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var derr error
			if err := ns.Do(func() error {
				c, derr = (&net.Dialer{}).DialContext(ctx, network, addr)
				return nil
			}); err != nil {
				return nil, err
			}
			return c, derr
		},
	}}
}

// ServeSilent opens a UDP socket and a TCP listener on addr in ns that read
// queries and never answer: an upstream that is down without telling
// (timeouts, no ICMP). They are closed when the test ends.
func ServeSilent(t testing.TB, ns *NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	err := ns.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("silent upstream %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	ServeTCP(t, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
}
