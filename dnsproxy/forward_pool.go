package dnsproxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// Pre-dialed upstream UDP sockets.
//
// Every UDP exchange still gets a socket of its own, used for that one
// exchange only (a fresh kernel-chosen ephemeral source port per query, DESIGN
// §4), but creating it (socket, connect, epoll registration) and closing it
// are taken off the query path: a few connected sockets per upstream are
// dialed ahead of need in the background, and used sockets are closed in the
// background. A socket that waited longer than udpPoolMaxAge is never used
// (so a port is not left open to pre-queued forgeries for long, and ports
// stay fresh); it is closed and the query dials inline, as before. Answers
// are validated exactly as before (random ID, QR, opcode, question).
const (
	udpPoolSize   = 8               // ready sockets per upstream
	udpPoolMaxAge = 2 * time.Second // a ready socket older than this is discarded
)

type pooledConn struct {
	c  net.Conn
	at time.Time
}

// udpPool holds an upstream's ready sockets, oldest first, and the used ones
// waiting to be closed. One worker goroutine per pool, started on first use,
// dials and closes; it never runs on the query path.
type udpPool struct {
	mu      sync.Mutex
	conns   []pooledConn
	dead    []net.Conn
	closed  bool
	started bool
	wake    chan struct{}
	wg      sync.WaitGroup
}

// udpConn returns an unused connected UDP socket to u: a ready one, or a new
// one dialed now when none is ready. The caller hands it to releaseUDP.
func (f *forwarder) udpConn(ctx context.Context, u *upstream) (net.Conn, error) {
	p := &u.pool
	now := time.Now()
	var c net.Conn
	p.mu.Lock()
	if n := len(p.conns); n > 0 {
		if last := p.conns[n-1]; now.Sub(last.at) <= udpPoolMaxAge {
			c = last.c
			p.conns[n-1] = pooledConn{}
			p.conns = p.conns[:n-1]
		} else { // the freshest is stale: all are
			for _, s := range p.conns {
				p.dead = append(p.dead, s.c)
			}
			clear(p.conns)
			p.conns = p.conns[:0]
		}
	}
	f.wakeLocked(u)
	p.mu.Unlock()
	if c != nil {
		return c, nil
	}
	return f.dialer.DialContext(ctx, "udp", u.addr)
}

// releaseUDP retires a socket that will not be used again: the worker closes
// it, or the caller now when the forwarder is closed.
func (f *forwarder) releaseUDP(u *upstream, c net.Conn) {
	p := &u.pool
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.dead = append(p.dead, c)
	f.wakeLocked(u)
	p.mu.Unlock()
}

// wakeLocked starts u's pool worker, or wakes it. p.mu is held.
func (f *forwarder) wakeLocked(u *upstream) {
	p := &u.pool
	if p.closed {
		return
	}
	if !p.started {
		p.started = true
		p.wake = make(chan struct{}, 1)
		p.wg.Add(1)
		go f.poolWorker(u)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// poolWorker closes retired sockets and keeps udpPoolSize ready ones, until
// the pool is closed.
func (f *forwarder) poolWorker(u *upstream) {
	p := &u.pool
	defer p.wg.Done()
	var dead []net.Conn
	for {
		p.mu.Lock()
		dead, p.dead = p.dead, dead[:0]
		closed, need := p.closed, udpPoolSize-len(p.conns)
		p.mu.Unlock()
		for i, c := range dead {
			c.Close()
			dead[i] = nil
		}
		if closed {
			return
		}
		failed := false
		for ; need > 0; need-- {
			ctx, cancel := context.WithTimeout(context.Background(), f.s.Timeout)
			c, err := f.dialer.DialContext(ctx, "udp", u.addr)
			cancel()
			if err != nil {
				failed = true // e.g. no route: queries dial inline and report it
				break
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				c.Close()
				break
			}
			p.conns = append(p.conns, pooledConn{c: c, at: time.Now()})
			p.mu.Unlock()
		}
		if failed {
			select { // do not spin on a failing dial
			case <-f.stop:
			case <-time.After(100 * time.Millisecond):
			}
		}
		<-p.wake
	}
}

// closePools closes every ready socket and stops the workers (which close the
// retired ones). Sockets taken afterwards are dialed and closed inline.
func (f *forwarder) closePools() {
	for _, u := range f.ups {
		p := &u.pool
		p.mu.Lock()
		p.closed = true
		conns := p.conns
		p.conns = nil
		if p.started {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		p.mu.Unlock()
		for _, pc := range conns {
			pc.c.Close()
		}
		p.wg.Wait()
	}
}
