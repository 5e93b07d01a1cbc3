package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockStateFile takes an exclusive flock on path+".lock", so that a
// successor's read-merge-write of --state-file and its predecessor's final
// write do not interleave (the final write would otherwise be lost when it
// lands between the successor's merge and its own write). It waits up to
// wait; the returned function releases the lock.
func lockStateFile(path string, wait time.Duration) (func(), error) {
	lp := path + ".lock"
	if err := os.MkdirAll(filepath.Dir(lp), 0o755); err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("state lock %s: %w", lp, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StateFile writes the resolver's name → IP state to a checkpoint file
// (--state-file) and merges what another process wrote there: at start (the
// previous process's last periodic checkpoint) and whenever the file changes
// under us (the previous process's final checkpoint, written after we
// started). An empty Path turns it off.
type StateFile struct {
	Srv     *Server
	Path    string
	Log     *slog.Logger
	written time.Time // mtime of our last write
}

// Merge restores what another process wrote to the file since it was last
// seen: the name → IP state into the kernel sets and the cached answers.
func (c *StateFile) Merge(ctx context.Context) {
	if c.Path == "" {
		return
	}
	fi, err := os.Stat(c.Path)
	if err != nil || fi.ModTime().Equal(c.written) {
		return
	}
	st, err := ReadCheckpoint(c.Path)
	if err != nil {
		// Corrupt, foreign or from a future release: a cold start (the kernel
		// set entries of the previous process expire on their own).
		c.Log.Error("state file unusable; starting without its name → IP state and cache", "path", c.Path, "err", err)
		c.written = fi.ModTime() // logged once, until the file changes
		return
	}
	if st.PID == os.Getpid() {
		return
	}
	cached := c.Srv.RestoreCache(st)
	n, err := c.Srv.Restore(ctx, st)
	if err != nil {
		c.Log.Warn("restoring state", "path", c.Path, "err", err)
	}
	c.Log.Info("state restored", "path", c.Path, "entries", n, "of", len(st.Entries),
		"cached-answers", cached, "of-cached", len(st.Cache), "from-pid", st.PID, "written", st.Written)
}

// Write writes the checkpoint; with mergeFirst it first merges what another
// process wrote since (the predecessor's final checkpoint), both under the
// state lock so that no write of the other process falls in between.
func (c *StateFile) Write(ctx context.Context, mergeFirst bool) {
	if c.Path == "" {
		return
	}
	unlock, err := lockStateFile(c.Path, 2*time.Second)
	if err != nil {
		c.Log.Warn("writing state file without its lock", "err", err)
	} else {
		defer unlock()
	}
	if mergeFirst {
		c.Merge(ctx)
	}
	if err := WriteCheckpoint(c.Path, c.Srv.Checkpoint()); err != nil {
		c.Log.Warn("writing state file", "err", err)
		return
	}
	if fi, err := os.Stat(c.Path); err == nil {
		c.written = fi.ModTime()
	}
}

// Loop writes the checkpoint every interval (merging first) until ctx ends.
func (c *StateFile) Loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.Write(ctx, true)
		}
	}
}
