package dnsproxy

import (
	"path/filepath"
	"testing"
	"time"
)

// TestStateFileLockExcludes: while one holder has the state lock another
// cannot take it (it gives up after its wait), and can once it is released.
func TestStateFileLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	unlock, err := lockStateFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := lockStateFile(path, 50*time.Millisecond); err == nil {
		u()
		t.Fatal("second holder took the lock while the first held it")
	}
	unlock()
	u, err := lockStateFile(path, time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	u()
}
