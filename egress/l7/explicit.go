package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/elazarl/goproxy"
)

// Explicit is the explicit HTTP proxy (HTTP requests in absolute form and
// CONNECT), built on goproxy.
type Explicit struct {
	checker *Checker
	hooks   Hooks
	limits  Limits
	proxy   *goproxy.ProxyHttpServer
	srv     *http.Server
}

type ctxKey struct{}

// NewExplicit returns an explicit proxy deciding with c.
func NewExplicit(c *Checker, limits Limits, hooks Hooks) *Explicit {
	p := &Explicit{checker: c, hooks: hooks, limits: limits.WithDefaults()}
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.Tr = &http.Transport{
		// Dial only the addresses the decision allowed (never re-resolve).
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d, _ := ctx.Value(ctxKey{}).(*dialTarget)
			if d == nil {
				return nil, errDenied
			}
			return p.hooks.dialFirst(ctx, d.addrs, d.port, p.limits.DialTimeout)
		},
		Proxy:                 nil,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       p.limits.IdleTimeout,
		ResponseHeaderTimeout: 60 * time.Second,
		TLSHandshakeTimeout:   p.limits.DialTimeout,
	}
	gp.ConnectDialWithReq = func(*http.Request, string, string) (net.Conn, error) { return nil, errDenied }
	gp.OnRequest().HandleConnectFunc(p.onConnect)
	gp.OnRequest().DoFunc(p.onRequest)
	p.proxy = gp
	p.srv = &http.Server{
		Handler:           gp,
		ReadHeaderTimeout: p.limits.HelloTimeout,
		IdleTimeout:       p.limits.IdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	return p
}

type dialTarget struct {
	addrs []netip.Addr
	port  int
}

// Handler is the proxy as an http.Handler.
func (p *Explicit) Handler() http.Handler { return p.proxy }

// Serve serves on ln until Close; at most Limits.MaxConns connections at once.
func (p *Explicit) Serve(ln net.Listener) error {
	err := p.srv.Serve(newLimitListener(ln, p.limits.MaxConns))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the proxy and closes its connections.
func (p *Explicit) Close() error { return p.srv.Close() }

func splitHostPort(hp string, def int) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		// no port
		if strings.Contains(hp, ":") && !strings.HasPrefix(hp, "[") {
			return "", 0, err
		}
		return strings.Trim(hp, "[]"), def, nil
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, port, nil
}

func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (p *Explicit) onConnect(authority string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	r := ctx.Req
	ev := decision{Mode: ModeConnect, Client: clientAddr(r), Host: authority}
	host, port, err := splitHostPort(authority, 443)
	if err != nil {
		ev.Verdict = Verdict{Reason: ReasonBadRequest}
	} else {
		ev.Port = port
		ev.Verdict = p.checker.Check(r.Context(), Request{Client: ev.Client, Host: host, Port: port})
		ev.Host = host
	}
	v := ev.Verdict
	if !v.Allowed {
		ev.Response = "403"
		p.hooks.decided(r.Context(), ev)
		return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: func(_ *http.Request, client net.Conn, _ *goproxy.ProxyCtx) {
			msg := "egressd: CONNECT " + authority + " blocked: " + v.Describe() + "\n"
			fmt.Fprintf(client, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Egressd-Reason: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", v.Describe(), len(msg), msg)
			_ = client.Close()
		}}, authority
	}
	p.hooks.decided(r.Context(), ev)
	return &goproxy.ConnectAction{Action: goproxy.ConnectHijack, Hijack: func(req *http.Request, client net.Conn, _ *goproxy.ProxyCtx) {
		server, err := p.hooks.dialFirst(req.Context(), v.Addrs, port, p.limits.DialTimeout)
		if err != nil {
			fmt.Fprintf(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			_ = client.Close()
			p.hooks.log().Debug("connect dial", "host", authority, "err", err)
			return
		}
		if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			_ = client.Close()
			_ = server.Close()
			return
		}
		splice(client, server, p.limits.IdleTimeout)
	}}, authority
}

func (p *Explicit) onRequest(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	ev := decision{Mode: ModeHTTP, Client: clientAddr(r), Host: r.URL.Host}
	def := 80
	if r.URL.Scheme == "https" {
		def = 443
	}
	host, port, err := splitHostPort(r.URL.Host, def)
	switch {
	case err != nil || r.URL.Host == "":
		ev.Verdict = Verdict{Reason: ReasonBadRequest}
	case !sameAuthority(r.Host, r.URL.Host, def):
		// The server routes by the Host header: it must be the name checked.
		ev.Verdict = Verdict{Reason: ReasonHostMismatch}
	default:
		ev.Host, ev.Port = host, port
		ev.Verdict = p.checker.Check(r.Context(), Request{Client: ev.Client, Host: host, Port: port})
	}
	v := ev.Verdict
	if !v.Allowed {
		ev.Response = "403"
		p.hooks.decided(r.Context(), ev)
		status := http.StatusForbidden
		if v.Reason == ReasonResolveFailed {
			status = http.StatusBadGateway
		}
		resp := goproxy.NewResponse(r, goproxy.ContentTypeText, status,
			"egressd: "+r.Method+" "+r.URL.Host+" blocked: "+v.Describe()+"\n")
		resp.Header.Set("X-Egressd-Reason", v.Describe())
		return r, resp
	}
	p.hooks.decided(r.Context(), ev)
	return r.WithContext(context.WithValue(r.Context(), ctxKey{}, &dialTarget{addrs: v.Addrs, port: port})), nil
}

// sameAuthority compares a Host header with the request target's authority.
func sameAuthority(hostHeader, target string, def int) bool {
	if hostHeader == "" {
		return true // HTTP/1.0 without Host: the target is used
	}
	h1, p1, err1 := splitHostPort(hostHeader, def)
	h2, p2, err2 := splitHostPort(target, def)
	return err1 == nil && err2 == nil && p1 == p2 &&
		strings.EqualFold(strings.TrimSuffix(h1, "."), strings.TrimSuffix(h2, "."))
}
