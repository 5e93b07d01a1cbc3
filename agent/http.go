package agent

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/egressd/egressd/dnsproxy"

	"github.com/egressd/egressd/telemetry"
)

// validateHTTP refuses a --http-addr reachable from other hosts without
// --http-token-file: /status and /metrics tell who resolves what.
func (c *Config) validateHTTP() error {
	local, err := telemetry.IsLoopbackAddr(c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr %q: %v", c.HTTPAddr, err)
	}
	if !local && c.HTTPTokenFile == "" {
		return fmt.Errorf("--http-addr %s is not a loopback address: /status and /metrics would be open to other hosts; set --http-token-file (a bearer token they then require) or bind 127.0.0.1", c.HTTPAddr)
	}
	return nil
}

// guardHTTP wraps the private endpoints (/status, /metrics) in the bearer
// token of --http-token-file, if set.
func (a *Agent) guardHTTP(h http.Handler) (http.Handler, error) {
	if a.cfg.HTTPTokenFile == "" {
		return h, nil
	}
	tok, err := telemetry.ReadBearerToken(a.cfg.HTTPTokenFile)
	if err != nil {
		return nil, fmt.Errorf("--http-token-file: %w", err)
	}
	return telemetry.RequireBearer(tok, h), nil
}

// notReady returns why /readyz fails, or "" when the agent is ready.
func (a *Agent) notReady() string {
	if !a.ready.Load() {
		return "not ready"
	}
	if msg, _ := a.lastErr.Load().(string); msg != "" {
		return "last sync failed: " + msg
	}
	if srv := a.dnsServer(); srv != nil && a.cfg.UpstreamDownGrace > 0 {
		if down := dnsproxy.AllDownFor(srv.Upstreams(), time.Now(), a.cfg.UpstreamDownGrace); len(down) > 0 {
			return fmt.Sprintf("no upstream resolver answered for more than %s (--upstream-down-grace): %s", a.cfg.UpstreamDownGrace, strings.Join(down, ", "))
		}
	}
	if a.cfg.ReadyRequiresValidPolicies && a.kube == nil {
		if h := a.source.Health(); !h.OK {
			return "policy files not taken (--ready-requires-valid-policies; the last good content is in force): " + h.LastError
		}
	}
	return ""
}
