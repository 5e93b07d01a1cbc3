package netmodel

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// servers are the TCP and UDP servers of one pod. They are created on a thread inside the
// pod's namespace, so their sockets belong to it, and serve on goroutines anywhere.
//
// TCP: on accept the server writes "<pod>:<port>\n", then echoes every byte it reads.
// UDP: every datagram is answered with "<pod>:<port>\n" followed by the datagram itself.
type servers struct {
	mu     sync.Mutex
	lns    []net.Listener
	pcs    []net.PacketConn
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startServers listens on every port, TCP and UDP, IPv4 (0.0.0.0) and IPv6 ([::],
// v6-only). It must run on a thread inside the pod's namespace.
func startServers(pod string, ports []int) (*servers, error) {
	s := &servers{conns: map[net.Conn]struct{}{}}
	for _, port := range ports {
		ident := fmt.Sprintf("%s:%d", pod, port)
		for _, fam := range []string{"4", "6"} {
			addr := fmt.Sprintf("0.0.0.0:%d", port)
			if fam == "6" {
				addr = fmt.Sprintf("[::]:%d", port)
			}
			ln, err := net.Listen("tcp"+fam, addr)
			if err != nil {
				s.close()
				return nil, fmt.Errorf("listen tcp%s %s: %w", fam, addr, err)
			}
			pc, err := net.ListenPacket("udp"+fam, addr)
			if err != nil {
				ln.Close()
				s.close()
				return nil, fmt.Errorf("listen udp%s %s: %w", fam, addr, err)
			}
			s.lns = append(s.lns, ln)
			s.pcs = append(s.pcs, pc)
			s.wg.Add(2)
			go s.serveTCP(ln, ident)
			go s.serveUDP(pc, ident)
		}
	}
	return s, nil
}

func (s *servers) serveTCP(ln net.Listener, ident string) {
	defer s.wg.Done()
	banner := []byte(ident + "\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if _, err := c.Write(banner); err != nil {
				return
			}
			io.Copy(c, c)
		}()
	}
}

func (s *servers) serveUDP(pc net.PacketConn, ident string) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	out := make([]byte, 0, 65536+len(ident)+1)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			continue // e.g. ICMP errors reported on the socket
		}
		out = append(append(append(out[:0], ident...), '\n'), buf[:n]...)
		pc.WriteTo(out, from)
	}
}

func (s *servers) close() {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, pc := range s.pcs {
		pc.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
