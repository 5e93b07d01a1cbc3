package main

import (
	"errors"
	"fmt"
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
