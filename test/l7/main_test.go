package l7

import (
	"os"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestMain removes the binaries the tests built (testenv.GoBuild).
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilds()
	os.Exit(code)
}
