// Command forward makes test/cluster's API server, which listens inside the node's
// network namespace, reachable from the host: it accepts TCP connections on -listen
// (in the namespace it starts in) and connects each to -to from inside the network
// namespace -netns. It exits when that namespace can no longer be entered.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept on (in the starting network namespace)")
	nsPath := flag.String("netns", "", "network namespace file (/run/netns/NAME) to connect from")
	to := flag.String("to", "", "address to connect to inside -netns")
	flag.Parse()
	if err := run(*listen, *nsPath, *to); err != nil {
		fmt.Fprintln(os.Stderr, "forward:", err)
		os.Exit(1)
	}
}

type dialReq struct {
	reply chan dialResult
}

type dialResult struct {
	conn net.Conn
	err  error
}

func run(listen, nsPath, to string) error {
	if nsPath == "" || to == "" {
		return fmt.Errorf("-netns and -to are required")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	dials := make(chan dialReq)
	ready := make(chan error, 1)
	// One OS thread lives in the target namespace and makes every outgoing socket.
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		h, err := netns.GetFromPath(nsPath)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		ready <- err
		if err != nil {
			return
		}
		for r := range dials {
			c, err := net.Dial("tcp", to)
			r.reply <- dialResult{c, err}
		}
	}()
	if err := <-ready; err != nil {
		return fmt.Errorf("entering %s: %w", nsPath, err)
	}
	slog.Info("forwarding", "listen", ln.Addr().String(), "netns", nsPath, "to", to)
	for {
		in, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer in.Close()
			r := dialReq{reply: make(chan dialResult, 1)}
			dials <- r
			res := <-r.reply
			if res.err != nil {
				slog.Warn("dial", "to", to, "err", res.err)
				if _, err := os.Stat(nsPath); err != nil {
					os.Exit(0) // the namespace is gone: the cluster is down
				}
				return
			}
			out := res.conn
			defer out.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(out, in)
				if tc, ok := out.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
			_, _ = io.Copy(in, out)
			if tc, ok := in.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			wg.Wait()
		}()
	}
}
