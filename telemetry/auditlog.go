package telemetry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/telemetry/event"
)

// Audit-log errors.
var (
	// ErrAuditFull: the line was dropped because the writer is behind (queue full).
	ErrAuditFull = errors.New("telemetry: audit log queue full, line dropped")
	// ErrAuditClosed: the log is closed; the line was dropped.
	ErrAuditClosed = errors.New("telemetry: audit log closed, line dropped")
)

// AuditOptions configures an AuditLog. At least one of Path and Stdout should be set;
// with neither, lines are accepted and discarded.
type AuditOptions struct {
	// Path of the audit log file (--audit-log). Opened O_APPEND|O_CREATE, mode FileMode.
	Path string
	// FileMode of a newly created file (default 0o640).
	FileMode os.FileMode
	// Stdout, when non-nil, receives every line too (e.g. os.Stdout). Not reopened.
	Stdout io.Writer
	// QueueSize is the number of lines that may wait for the writer (default 8192).
	// When it is full, Write drops the line and counts it instead of blocking.
	QueueSize int
	// FlushInterval bounds how long a written line may stay in the buffer while more
	// lines keep arriving (default 100ms). The buffer is also flushed whenever the queue
	// runs empty, so under light load every line is flushed at once.
	FlushInterval time.Duration
	// Allowed writes dns.lookup.allowed events too (verbose; Emit leaves them
	// out otherwise).
	Allowed bool
	// OnDrop, when set, is called (from the caller's or the writer's goroutine) for each
	// dropped line; Metrics wires egressd_audit_dropped_total here.
	OnDrop func()
}

// AuditLog writes events as JSON lines to a file and/or stdout.
//
// Write never blocks on I/O: the caller's goroutine encodes the line and hands it to a
// bounded queue; one writer goroutine owns the buffered outputs, so lines are never
// interleaved. When the queue is full (disk slow or stuck, stdout blocked) the line is
// dropped and counted (Dropped, egressd_audit_dropped_total): the DNS hot path is never
// held up by the audit log. Lines that fail to be written (e.g. disk full) are counted as
// dropped too. Close drains the queue, flushes and closes the file.
type AuditLog struct {
	opts    AuditOptions
	queue   chan []byte
	ctl     chan ctlReq
	done    chan struct{} // closed by Close: writer drains and exits
	exited  chan struct{} // closed by the writer when it is done
	mu      sync.RWMutex  // guards closed against concurrent Write/Close
	closed  bool
	dropped atomic.Uint64
	written atomic.Uint64

	// owned by the writer goroutine
	file   *os.File
	buf    *bufio.Writer
	out    *bufio.Writer
	errMu  sync.Mutex
	lastEr error
}

// NewAuditLog opens the file (if any) and starts the writer goroutine.
func NewAuditLog(opts AuditOptions) (*AuditLog, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 8192
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.FileMode == 0 {
		opts.FileMode = 0o640
	}
	a := &AuditLog{
		opts:   opts,
		queue:  make(chan []byte, opts.QueueSize),
		ctl:    make(chan ctlReq),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	if opts.Path != "" {
		f, err := a.open()
		if err != nil {
			return nil, err
		}
		a.file = f
		a.buf = bufio.NewWriterSize(f, 64<<10)
	}
	if opts.Stdout != nil {
		a.out = bufio.NewWriterSize(opts.Stdout, 16<<10)
	}
	go a.run()
	return a, nil
}

func (a *AuditLog) open() (*os.File, error) {
	f, err := os.OpenFile(a.opts.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, a.opts.FileMode)
	if err != nil {
		return nil, fmt.Errorf("telemetry: audit log: %w", err)
	}
	return f, nil
}

// Emit writes one audit line for ev (dns.lookup.allowed only with
// AuditOptions.Allowed): the audit-log sink. A drop is counted by the log. A nil
// *AuditLog is a no-op.
func (a *AuditLog) Emit(_ context.Context, ev event.Event) {
	if a == nil || (ev.Name == event.LookupAllowed && !a.opts.Allowed) {
		return
	}
	_ = a.Write(ev)
}

// Write queues one event as one line. It returns ErrAuditFull or ErrAuditClosed when the
// line was dropped, nil otherwise; it never blocks on I/O. Safe for concurrent use.
func (a *AuditLog) Write(ev event.Event) error {
	line, err := ev.MarshalJSON()
	if err != nil { // not reachable for Event; count it rather than lose it silently
		a.drop()
		return err
	}
	return a.WriteLine(append(line, '\n'))
}

// WriteLine queues one pre-encoded line (it must end in '\n' and not be modified after).
func (a *AuditLog) WriteLine(line []byte) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.drop()
		return ErrAuditClosed
	}
	select {
	case a.queue <- line:
		return nil
	default:
		a.drop()
		return ErrAuditFull
	}
}

func (a *AuditLog) drop() {
	a.dropped.Add(1)
	if a.opts.OnDrop != nil {
		a.opts.OnDrop()
	}
}

// Dropped is the number of lines dropped so far (queue full, closed, write errors).
func (a *AuditLog) Dropped() uint64 { return a.dropped.Load() }

// Written is the number of lines handed to the outputs so far.
func (a *AuditLog) Written() uint64 { return a.written.Load() }

// Err returns the last write/flush/reopen error of the writer, if any.
func (a *AuditLog) Err() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.lastEr
}

func (a *AuditLog) setErr(err error) {
	a.errMu.Lock()
	a.lastEr = err
	a.errMu.Unlock()
}

// Reopen flushes and closes the file and opens Path again (for log rotation: call it on
// SIGHUP after the file was renamed). Lines queued meanwhile go to the new file. It is a
// no-op without a Path.
func (a *AuditLog) Reopen() error { return a.control(true) }

type ctlReq struct {
	reopen bool
	reply  chan error
}

func (a *AuditLog) control(reopen bool) error {
	req := ctlReq{reopen: reopen, reply: make(chan error, 1)}
	select {
	case a.ctl <- req:
		return <-req.reply
	case <-a.exited:
		return ErrAuditClosed
	}
}

// Close stops accepting lines, writes what is queued, flushes and closes the file.
// Later Writes are dropped with ErrAuditClosed. Close is idempotent.
func (a *AuditLog) Close() error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.done)
	}
	a.mu.Unlock()
	<-a.exited
	return a.Err()
}

// Flush waits until every line queued before the call has been written and flushed.
// Lines written concurrently with Flush may or may not be included.
func (a *AuditLog) Flush() error { return a.control(false) }

func (a *AuditLog) run() {
	defer close(a.exited)
	ticker := time.NewTicker(a.opts.FlushInterval)
	defer ticker.Stop()
	dirty := false
	for {
		select {
		case line := <-a.queue:
			a.write(line)
			dirty = true
			// Drain what is there already, then flush once the queue runs empty.
			for drained := false; !drained; {
				select {
				case line := <-a.queue:
					a.write(line)
				default:
					drained = true
				}
			}
			a.flush()
			dirty = false
		case <-ticker.C:
			if dirty {
				a.flush()
				dirty = false
			}
		case req := <-a.ctl:
			a.drainAll()
			dirty = false
			if req.reopen {
				req.reply <- a.doReopen()
			} else {
				req.reply <- nil
			}
		case <-a.done:
			a.drainAll()
			if a.file != nil {
				if err := a.file.Close(); err != nil {
					a.setErr(err)
				}
				a.file = nil
			}
			return
		}
	}
}

// drainAll writes every queued line and flushes.
func (a *AuditLog) drainAll() {
	for {
		select {
		case line := <-a.queue:
			a.write(line)
		default:
			a.flush()
			return
		}
	}
}

func (a *AuditLog) write(line []byte) {
	ok := true
	if a.buf != nil {
		if _, err := a.buf.Write(line); err != nil {
			a.setErr(err)
			ok = false
		}
	}
	if a.out != nil {
		if _, err := a.out.Write(line); err != nil {
			a.setErr(err)
			ok = false
		}
	}
	if ok {
		a.written.Add(1)
	} else {
		a.drop()
	}
}

func (a *AuditLog) flush() {
	if a.buf != nil {
		if err := a.buf.Flush(); err != nil {
			a.setErr(err)
			// bufio keeps the failed bytes and fails every later write; start afresh.
			a.buf.Reset(a.file)
		}
	}
	if a.out != nil {
		if err := a.out.Flush(); err != nil {
			a.setErr(err)
			a.out.Reset(a.opts.Stdout)
		}
	}
}

func (a *AuditLog) doReopen() error {
	if a.opts.Path == "" {
		return nil
	}
	f, err := a.open()
	if err != nil {
		a.setErr(err)
		return err // keep writing to the old file
	}
	if a.file != nil {
		if cerr := a.file.Close(); cerr != nil {
			a.setErr(cerr)
		}
	}
	a.file = f
	a.buf.Reset(f)
	return nil
}
