package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// builds caches the binaries built by GoBuild in this test process.
var builds struct {
	mu   sync.Mutex
	bins map[string]*built
}

type built struct {
	once sync.Once
	bin  string
	err  error
}

// GoBuild builds the main package pkg (an import path, e.g.
// "github.com/egressd/egressd/cmd/egressd") once per test process and returns
// the binary's path; a build error fails the test.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*built{}
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &built{}
		builds.bins[pkg] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "egressd-test-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.bin = filepath.Join(dir, path.Base(pkg))
		if out, err := exec.Command("go", "build", "-o", b.bin, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// RemoveBuilds removes the binaries GoBuild built; a package's TestMain calls
// it after m.Run.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	for _, b := range builds.bins {
		if b.bin != "" {
			os.RemoveAll(filepath.Dir(b.bin))
		}
	}
}
