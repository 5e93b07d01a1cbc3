// Package jaeger builds (once per machine, cached) and starts a real Jaeger v2 for tests:
// OTLP gRPC and OTLP HTTP receivers, in-memory storage and the query API, all on
// 127.0.0.1 with free ports, so tests using it may run in parallel.
//
//	srv := jaeger.Start(t)               // builds or reuses the binary; stopped at t.Cleanup
//	// export spans to srv.OTLPGRPC ("127.0.0.1:port") or srv.OTLPHTTP ("http://127.0.0.1:port")
//	span := srv.WaitForSpan(t, "egressd", "dns.lookup.blocked", 30*time.Second, nil)
//
// The binary is built from the Go module github.com/jaegertracing/jaeger at Version in a
// throwaway tools module (see shared RECIPES "Traces") into
// $HOME/.cache/egressd/jaeger-<Version>/jaeger (EGRESSD_CACHE overrides
// $HOME/.cache/egressd; EGRESSD_JAEGER names a binary to use instead). It is never rebuilt
// while the cached binary exists. A first build takes about 3+ minutes on 2 cores; a file
// lock makes concurrent test processes wait for one build.
package jaeger

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
	"github.com/egressd/egressd/test/toolcache"
)

// Version of the github.com/jaegertracing/jaeger Go module that is built (Jaeger v2).
const Version = "v1.76.0"

// Module and package of the Jaeger v2 binary.
const (
	module = "github.com/jaegertracing/jaeger"
	pkg    = module + "/cmd/jaeger"
)

// CacheDir is where the binary is cached.
func CacheDir() string { return tool.Dir() }

// BinaryPath is the binary used: $EGRESSD_JAEGER when set, else the cached one.
func BinaryPath() string { return tool.Path() }

// tool builds and caches the binary (test/toolcache).
var tool = toolcache.Tool{Name: "jaeger", Version: Version, Override: "EGRESSD_JAEGER", Build: build}

// EnsureBinary returns the path of the Jaeger binary, building it first if it is
// not cached; concurrent test processes build it once.
func EnsureBinary(ctx context.Context, logw io.Writer) (string, error) {
	if logw == nil {
		logw = io.Discard
	}
	return tool.Ensure(ctx, logw)
}

const toolsGoMod = `module egressd.test/jaegertools

go 1.26.0

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
`

const toolsGo = `//go:build tools

package tools

import _ "` + pkg + `"
`

// build makes the tools module in dir/src and builds the binary into bin (atomically).
func build(ctx context.Context, dir, bin string, logw io.Writer) error {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(src, "go.sum")); err != nil {
		// Fresh module (keep an existing go.mod/go.sum from an interrupted build: it
		// already has the resolved versions).
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(toolsGoMod), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(src, "tools.go"), []byte(toolsGo), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	out := io.Writer(logf)
	if logw != nil {
		out = io.MultiWriter(logf, logw)
	}
	env := append(os.Environ(),
		"GOFLAGS=-mod=mod",
		"GOWORK=off",
		// Some dependency versions are not known to the reachable checksum database.
		"GONOSUMDB=github.com/open-telemetry,go.opentelemetry.io",
	)
	tmp := bin + ".tmp"
	steps := [][]string{
		{"get", pkg + "@" + Version},
		{"build", "-o", tmp, pkg},
	}
	start := time.Now()
	for _, args := range steps {
		fmt.Fprintf(out, "+ go %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, toolcache.GoTool(), args...)
		cmd.Dir = src
		cmd.Env = env
		cmd.Stdout = out
		cmd.Stderr = out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building Jaeger %s: go %s: %w (log: %s)", Version, strings.Join(args, " "), err, logf.Name())
		}
	}
	if err := os.Rename(tmp, bin); err != nil {
		return err
	}
	fmt.Fprintf(out, "built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return nil
}

// Require returns the Jaeger binary, building it if needed. When it cannot be had, the test is skipped outside CI and fails in CI (test/testenv).
//
// A build inside a test is bounded by the test binary's deadline (go test -timeout,
// 10 minutes by default) less a margin, so that a slow first build fails with a clear
// message instead of a timeout panic; the go build cache keeps the progress. Prebuild
// with `go run ./test/jaeger/cmd/jaeger-build` (e.g. in make test / .ci/run) to keep the
// build out of test time.
//
// Under go test -short (make unit) the test is skipped: a real Jaeger is not a unit test.
func Require(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a real Jaeger (test/jaeger)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var c2 context.CancelFunc
			ctx, c2 = context.WithDeadline(ctx, dl.Add(-time.Minute))
			defer c2()
		}
	}
	if !toolcache.IsExecutable(BinaryPath()) {
		t.Logf("building Jaeger %s into %s (once per machine, ~3+ minutes)", Version, CacheDir())
	}
	start := time.Now()
	bin, err := EnsureBinary(ctx, nil)
	if err != nil {
		testenv.Unavailable(t, "Jaeger %s: %v (prebuild with: go run ./test/jaeger/cmd/jaeger-build)", Version, err)
		return ""
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("Jaeger ready after %s", d.Round(time.Second))
	}
	return bin
}

// Server is a running Jaeger.
type Server struct {
	// OTLPGRPC is the OTLP gRPC receiver, "127.0.0.1:port" (plain text).
	OTLPGRPC string
	// OTLPHTTP is the OTLP HTTP receiver base URL, "http://127.0.0.1:port"
	// (traces go to /v1/traces).
	OTLPHTTP string
	// QueryURL is the query API/UI base URL, "http://127.0.0.1:port".
	QueryURL string

	cmd    *exec.Cmd
	logs   *bytes.Buffer
	logMu  *sync.Mutex
	exited chan struct{}
	dir    string
}

// Start builds or reuses the binary, starts Jaeger with a config on free 127.0.0.1 ports
// in a temporary directory, waits until it is ready and stops it at the end of the test
// (its log is printed if the test failed).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	var lastErr error
	for range 3 { // a free port may be taken between choosing and binding it
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		s, err := StartBinary(ctx, bin, t.TempDir())
		cancel()
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("jaeger log:\n%s", s.Logs())
				}
				s.Stop()
			})
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting Jaeger: %v", lastErr)
	return nil
}

// StartBinary starts the Jaeger binary with a config file written to dir and waits until
// the query API answers and both OTLP receivers accept connections. Stop it with Stop.
func StartBinary(ctx context.Context, bin, dir string) (*Server, error) {
	ports, err := testenv.FreePorts(4)
	if err != nil {
		return nil, err
	}
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	queryAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	queryGRPC := fmt.Sprintf("127.0.0.1:%d", ports[3])
	cfg := fmt.Sprintf(configTemplate, queryAddr, queryGRPC, grpcAddr, httpAddr)
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	s := &Server{
		OTLPGRPC: grpcAddr,
		OTLPHTTP: "http://" + httpAddr,
		QueryURL: "http://" + queryAddr,
		logs:     &bytes.Buffer{},
		logMu:    &sync.Mutex{},
		exited:   make(chan struct{}),
		dir:      dir,
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Dir = dir
	cmd.Stdout = lockedWriter{s}
	cmd.Stderr = lockedWriter{s}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.cmd = cmd
	go func() { cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(ctx, grpcAddr, httpAddr); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\njaeger log:\n%s", err, s.Logs())
	}
	return s, nil
}

// configTemplate: Jaeger v2 (OpenTelemetry Collector) with OTLP receivers, memory
// storage and the query extension; the collector's own metrics endpoint (:8888) is off.
const configTemplate = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s

processors:
  batch:
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

type lockedWriter struct{ s *Server }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	if w.s.logs.Len() > 4<<20 { // bound memory
		return len(p), nil
	}
	return w.s.logs.Write(p)
}

// Logs returns Jaeger's output so far.
func (s *Server) Logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logs.String()
}

func (s *Server) waitReady(ctx context.Context, addrs ...string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("jaeger exited before it was ready: %v", s.cmd.ProcessState)
		default:
		}
		ready := true
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				ready = false
				break
			}
			c.Close()
		}
		if ready {
			resp, err := client.Get(s.QueryURL + "/api/services")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("jaeger not ready: %w", ctx.Err())
		case <-s.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop terminates Jaeger (SIGTERM, then SIGKILL after 10s) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// Trace, Span and KeyValue are the parts of the query API's JSON (GET /api/traces) that
// tests look at.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span of a Trace.
type Span struct {
	TraceID       string     `json:"traceID"`
	SpanID        string     `json:"spanID"`
	OperationName string     `json:"operationName"`
	StartTime     int64      `json:"startTime"` // µs since the epoch
	Duration      int64      `json:"duration"`  // µs
	Tags          []KeyValue `json:"tags"`
	ProcessID     string     `json:"processID"`
	// Process is filled in by Traces from the trace's processes.
	Process Process `json:"-"`
}

// Process is the resource of a span: service name and resource attributes as tags.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// KeyValue is a tag; Value is a string, float64 or bool as decoded from JSON.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Tag returns the value of the span tag key.
func (s Span) Tag(key string) (any, bool) { return tag(s.Tags, key) }

// TagString returns the tag as a string ("" when absent); numbers are formatted with %v.
func (s Span) TagString(key string) string {
	v, ok := s.Tag(key)
	if !ok {
		return ""
	}
	if str, ok := v.(string); ok {
		return str
	}
	return fmt.Sprint(v)
}

// Tag returns the value of the process (resource) tag key.
func (p Process) Tag(key string) (any, bool) { return tag(p.Tags, key) }

func tag(kvs []KeyValue, key string) (any, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Traces queries GET /api/traces for the service (and operation, if not empty) over the
// last hour.
func (s *Server) Traces(ctx context.Context, service, operation string) ([]Trace, error) {
	q := url.Values{"service": {service}, "lookback": {"1h"}, "limit": {"1000"}}
	if operation != "" {
		q.Set("operation", operation)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.QueryURL+"/api/traces?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound { // service not known yet
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/traces: %s: %s", resp.Status, body)
	}
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("GET /api/traces: %w", err)
	}
	for i := range out.Data {
		tr := &out.Data[i]
		for j := range tr.Spans {
			tr.Spans[j].Process = tr.Processes[tr.Spans[j].ProcessID]
		}
	}
	return out.Data, nil
}

// Spans returns every span of the service's traces named operation ("" = all).
func (s *Server) Spans(ctx context.Context, service, operation string) ([]Span, error) {
	traces, err := s.Traces(ctx, service, operation)
	if err != nil {
		return nil, err
	}
	var spans []Span
	for _, tr := range traces {
		for _, sp := range tr.Spans {
			if operation == "" || sp.OperationName == operation {
				spans = append(spans, sp)
			}
		}
	}
	return spans, nil
}

// WaitForSpan polls the query API until a span of service named operation for which
// match returns true (match nil: any) is stored, and returns it; it fails the test after
// timeout.
func (s *Server) WaitForSpan(t testing.TB, service, operation string, timeout time.Duration, match func(Span) bool) Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	var seen int
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		spans, err := s.Spans(ctx, service, operation)
		cancel()
		if err != nil {
			lastErr = err
		}
		seen = len(spans)
		for _, sp := range spans {
			if match == nil || match(sp) {
				return sp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching %s span of service %s in Jaeger after %s (%d spans of that name seen, last error %v)",
				operation, service, timeout, seen, lastErr)
		}
		select {
		case <-s.exited:
			t.Fatalf("jaeger exited: %v\n%s", s.cmd.ProcessState, s.Logs())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
