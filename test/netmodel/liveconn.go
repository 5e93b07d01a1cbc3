package netmodel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LiveConn is a long-lived connection from a pod, for revocation tests: open it while
// traffic is allowed, change the firewall, then ask Alive.
type LiveConn struct {
	From  *Pod
	To    netip.AddrPort
	Proto Protocol
	// Banner is the server's identity read when the connection opened ("y/a:80").
	Banner string

	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
	seq  int
	buf  []byte
}

// OpenConn opens a TCP connection from inside from's namespace to to:port and reads the
// banner (within the Prober's timeout).
func (pr *Prober) OpenConn(ctx context.Context, from *Pod, to netip.Addr, port int) (*LiveConn, error) {
	return pr.OpenConnProto(ctx, from, to, port, TCP)
}

// OpenConnProto is OpenConn for TCP or UDP. A UDP LiveConn is a connected socket (one
// conntrack flow); opening it exchanges one datagram.
func (pr *Prober) OpenConnProto(ctx context.Context, from *Pod, to netip.Addr, port int, proto Protocol) (*LiveConn, error) {
	timeout := pr.timeout(0)
	dst := netip.AddrPortFrom(to, uint16(port))
	conn, err := dial(ctx, from, dst, proto, timeout)
	if err != nil {
		return nil, fmt.Errorf("netmodel: open %s %v from %s: %w", proto, dst, from.Name, err)
	}
	lc := &LiveConn{From: from, To: dst, Proto: proto, conn: conn, buf: make([]byte, 2048)}
	if proto == TCP {
		lc.rd = bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(timeout))
		line, err := lc.rd.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("netmodel: open TCP %v from %s: banner: %w", dst, from.Name, err)
		}
		lc.Banner = strings.TrimSuffix(line, "\n")
	} else {
		id, ok := lc.udpPing(timeout)
		if !ok {
			id, ok = lc.udpPing(timeout)
		}
		if !ok {
			conn.Close()
			return nil, fmt.Errorf("netmodel: open UDP %v from %s: no answer", dst, from.Name)
		}
		lc.Banner = id
	}
	from.mu.Lock()
	if from.conns == nil {
		from.conns = map[*LiveConn]struct{}{}
	}
	from.conns[lc] = struct{}{}
	from.mu.Unlock()
	return lc, nil
}

// LocalAddr is the connection's source address and port inside the pod.
func (c *LiveConn) LocalAddr() netip.AddrPort {
	if ap, err := netip.ParseAddrPort(c.conn.LocalAddr().String()); err == nil {
		return ap
	}
	return netip.AddrPort{}
}

// Alive sends a ping and reports whether its echo came back within timeout (0: the
// default probe timeout). A dropped connection answers false; so does a reset or closed
// one. Answers to earlier pings that arrive late are skipped.
func (c *LiveConn) Alive(timeout time.Duration) bool {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return false
	}
	if c.Proto == UDP {
		_, ok := c.udpPing(timeout)
		return ok
	}
	c.seq++
	token := "ping-" + strconv.Itoa(c.seq)
	deadline := time.Now().Add(timeout)
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write([]byte(token + "\n")); err != nil {
		return false
	}
	for {
		line, err := c.rd.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.TrimSuffix(line, "\n") == token {
			return true
		}
	}
}

// udpPing sends one datagram and waits for its echo; c.mu is held (or c is not shared).
func (c *LiveConn) udpPing(timeout time.Duration) (string, bool) {
	c.seq++
	token := "ping-" + strconv.Itoa(c.seq)
	c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write([]byte(token)); err != nil {
		return "", false
	}
	for {
		n, err := c.conn.Read(c.buf)
		if err != nil {
			return "", false
		}
		if id, payload, _ := strings.Cut(string(c.buf[:n]), "\n"); payload == token {
			return id, true
		}
	}
}

// Close closes the connection (also done by the Node's Close).
func (c *LiveConn) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	if c.From != nil {
		c.From.mu.Lock()
		delete(c.From.conns, c)
		c.From.mu.Unlock()
	}
	err := conn.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
