package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/file"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/telemetry"
	"github.com/egressd/egressd/telemetry/event"
	"github.com/egressd/egressd/telemetry/statusapi"
)

// agent wires the sources, the policy store, the dataplane and the resolver.
type Agent struct {
	cfg      *Config
	log      *slog.Logger
	store    *policy.Store
	engine   *policy.Engine
	compiler *policy.Compiler
	source   *file.Source
	kube     *kube.Source // cluster mode (kube.go)
	enforcer *egress.Enforcer
	dns      *dnsproxy.Server
	metrics  *telemetry.Metrics
	events   *event.Fanout // every event goes here (telemetry.go)

	ready    atomic.Bool
	synced   atomic.Int64 // plan generation in the kernel
	lastErr  atomic.Value // string
	syncReq  chan struct{}
	needFull bool // the next sync renders the whole table
	started  time.Time

	sideDoors   *sideDoors       // DNS side doors (sidedoors.go); nil without the nftables dataplane
	interceptOn bool             // --intercept-dns is programmed (intercept.go)
	intercepted []netip.AddrPort // what it programmed
	// /status (status.go)
	blocked       statusapi.BlockedRing
	lastApply     atomic.Int64 // unix ns of the last successful sync
	interceptView atomic.Value // []string: a copy of intercepted
}

func New(cfg *Config, log *slog.Logger) *Agent {
	store := policy.NewStore()
	return &Agent{
		cfg:      cfg,
		log:      log,
		store:    store,
		engine:   policy.NewEngine(store, cfg.engineOptions()),
		compiler: policy.NewCompiler(store, cfg.engineOptions(), cfg.compilerScope()...), // kube.go
		source:   file.New(store, cfg.Policies, cfg.Workloads, log.With("component", "source")),
		syncReq:  make(chan struct{}, 1),
		started:  time.Now(),
	}
}

// component is one part of the agent. start brings it up and returns the
// function that takes it down (nil: nothing to stop); the agent starts the
// components in order and stops the started ones in reverse.
type component struct {
	name  string
	start func(ctx context.Context) (stop func(), err error)
}

// components are the agent's parts in start order: events go to telemetry
// from the first moment; policies are in the store before the dataplane
// programs them; the kernel holds the plan before the resolver answers; the
// resolver listens before pods' DNS is redirected to it; /readyz comes last.
func (a *Agent) components() []component {
	return []component{
		{"telemetry", a.startTelemetry},      // telemetry.go
		{"policy source", a.startSource},     // kube.go or the files
		{"dataplane", a.startDataplane},      // nftables, and the first sync
		{"resolver", a.startDNS},             // dns.go
		{"dns interception", a.interceptDNS}, // intercept.go
		{"l7 proxies", a.startL7},            // l7.go
		{"http", a.startHTTP},
		{"watchers", a.startWatchers},
	}
}

// Run starts the components and blocks until ctx ends; it then stops them
// in reverse order. The kernel state stays in place for the next agent.
func (a *Agent) Run(ctx context.Context) error {
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	for _, c := range a.components() {
		stop, err := c.start(ctx)
		if err != nil {
			return err
		}
		if stop != nil {
			stops = append(stops, stop)
		}
	}
	a.ready.Store(true)
	a.log.Info("egressd ready", "listen", a.cfg.Listen, "dataplane", a.cfg.Dataplane, "policies", len(a.store.Policies()), "workloads", len(a.store.Workloads()))
	return a.syncLoop(ctx)
}

// startSource fills the store from the Kubernetes API (cluster mode) or
// from the policy and workload files.
func (a *Agent) startSource(ctx context.Context) (func(), error) {
	if a.cfg.kubeMode() {
		if err := a.startKube(ctx); err != nil {
			return nil, err
		}
		// No policy files: invalid policies are in egressd_policies{state}.
		a.metrics.ObservePolicyReload(true)
		return nil, nil
	}
	a.source.SetHooks(a.sourceHooks()) // telemetry.go
	// Problems are logged and reported by the source; invalid objects
	// are skipped and the valid ones are in force.
	_, _ = a.source.Load()
	if err := a.source.Unusable(); err != nil {
		// Fail closed: without the content of these files the agent would
		// enforce less than they say. The kernel state of a previous agent
		// stays in place, and DNS fails closed while no agent runs.
		return nil, fmt.Errorf("not starting on policy files whose content is unknown (fix or remove them): %w", err)
	}
	return nil, nil
}

// startDataplane creates the nftables enforcer (--dataplane nftables) and
// applies the first plan. Stopping it leaves the kernel state in place for
// the next agent.
func (a *Agent) startDataplane(ctx context.Context) (func(), error) {
	stop := func() {}
	if a.cfg.Dataplane == "nftables" {
		opts := []egress.Option{
			egress.WithNode(a.cfg.NodeName),
			egress.WithDefaultVerdict(policy.Verdict(a.cfg.DefaultVerdict)),
			egress.WithLogger(a.log.With("component", "egress")),
			egress.WithRevocation(func(c policy.Connection) policy.Verdict { return a.engine.Decide(c).Verdict }),
			egress.WithDNSExempt(append(a.listenAddrPorts(), a.l7Exempt()...)...), // l7.go: proxies
		}
		if a.cfg.NFLogGroup > 0 {
			opts = append(opts, egress.WithNFLog(uint16(a.cfg.NFLogGroup)))
		}
		sdOpt, err := a.sideDoorsOption() // sidedoors.go
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdOpt)
		prOpt, err := a.denyPreresolve(ctx) // sidedoors.go
		if err != nil {
			return nil, err
		}
		opts = append(opts, prOpt)
		// Stopped after the resolver and before the telemetry.
		stopOrigDst := a.startOrigDstWorker()
		if a.enforcer, err = egress.New(opts...); err != nil {
			stopOrigDst()
			return nil, fmt.Errorf("dataplane: %w", err)
		}
		stop = func() { a.stopDataplane(); stopOrigDst() } // uninstall.go: the kernel state stays unless the DaemonSet is gone
	}
	if err := a.sync(ctx); err != nil {
		stop()
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	return stop, nil
}

// startWatchers starts what follows changes once the agent is ready: the
// policy files, the dropped packets (--nflog-group) and the DoH resolver
// list. They end with ctx.
func (a *Agent) startWatchers(ctx context.Context) (func(), error) {
	if !a.cfg.kubeMode() {
		go a.source.Watch(ctx, a.cfg.ReloadInterval, a.requestSync)
	}
	if a.cfg.NFLogGroup > 0 && a.enforcer != nil {
		go func() {
			d := egress.DeniedEvents{Group: uint16(a.cfg.NFLogGroup), Rate: a.cfg.DeniedEventsRate,
				Engine: a.engine, Bypass: a.bypassEvent, Events: a.events} // sidedoors.go
			if err := d.Run(ctx); err != nil {
				a.log.Error("denied-packet reports stopped", "err", err)
			}
		}()
	}
	go a.watchDoHList(ctx) // sidedoors.go
	return nil, nil
}

// syncLoop applies policy changes to the kernel until ctx ends.
func (a *Agent) syncLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			a.log.Info("shutting down; kernel state stays in place for the next agent")
			return nil
		case <-a.syncReq:
			if err := a.sync(ctx); err != nil {
				a.log.Error("sync failed; previous kernel state stays", "err", err)
			}
		}
	}
}

func (a *Agent) requestSync() {
	select {
	case a.syncReq <- struct{}{}:
	default:
	}
}

// sync compiles the store and applies the difference to the kernel.
func (a *Agent) sync(ctx context.Context) (err error) {
	start := time.Now()
	var gens map[policy.PolicyRef]int64 // cluster mode: policy generations compiled (the node Lease)
	if a.kube != nil {
		gens = a.kube.StoreGenerations()
	}
	plan, changes := a.compiler.Compile()
	defer func() { a.metrics.ObserveDataplaneApply(time.Since(start), err) }()
	if a.needFull {
		changes = policy.Changes{Full: true}
	}
	if a.enforcer != nil && !changes.Empty() {
		if err := a.enforcer.Apply(ctx, plan, changes); err != nil {
			a.lastErr.Store(err.Error())
			// The kernel may hold an older plan: render everything next time.
			a.needFull = true
			return err
		}
	}
	a.needFull = false
	a.synced.Store(int64(plan.Generation))
	a.lastErr.Store("")
	a.lastApply.Store(time.Now().UnixNano())
	if a.kube != nil {
		a.kube.ReportProgrammed(gens) // queued; never blocks the dataplane
		a.refreshDNSIntercept()       // kube_intercept.go
	}
	a.log.Info("policy synced", "generation", plan.Generation, "full", changes.Full,
		"policies", len(changes.Policies), "rules", len(changes.Rules), "workloads", len(changes.Workloads),
		"took", time.Since(start))
	return nil
}

// listenAddrPorts are the resolver addresses pods may always reach.
func (a *Agent) listenAddrPorts() []netip.AddrPort {
	var out []netip.AddrPort
	for _, l := range a.cfg.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

func (a *Agent) startHTTP(context.Context) (func(), error) {
	h, err := a.httpHandler()
	if err != nil {
		return nil, err
	}
	ln, err := telemetry.ListenHTTP(a.cfg.HTTPAddr) // shared with a successor during a handover
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server", "err", err)
		}
	}()
	return func() { srv.Close() }, nil
}

// httpHandler serves /healthz and /readyz (open), /metrics and /status
// (behind --http-token-file when set).
func (a *Agent) httpHandler() (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if msg := a.notReady(); msg != "" { // http.go
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready generation=%d\n", a.synced.Load())
	})
	private := http.NewServeMux()
	a.registerMetrics(private)
	a.registerStatus(private)            // /status: status.go
	guarded, err := a.guardHTTP(private) // http.go: --http-token-file
	if err != nil {
		return nil, err
	}
	mux.Handle("/", guarded)
	return mux, nil
}

func NewLogger(cfg *Config) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", cfg.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", cfg.LogFormat)
}
