package attack

import (
	"os"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestMain is the package's only TestMain: it removes the agent binary
// testenv.GoBuild built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilds()
	os.Exit(code)
}
