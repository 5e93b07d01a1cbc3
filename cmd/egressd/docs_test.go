package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/egressd/egressd/agent"
)

// Every flag of the agent is documented in docs/ (egressd.md, l7.md, detection.md or kubernetes.md).
func TestEveryFlagIsDocumented(t *testing.T) {
	var docs strings.Builder
	for _, f := range []string{"../../docs/egressd.md", "../../docs/l7.md", "../../docs/detection.md", "../../docs/kubernetes.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	usage := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		usage <- string(b)
	}()
	if _, err := agent.ParseFlags([]string{"-h"}, w); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	w.Close()
	n := 0
	for _, line := range strings.Split(<-usage, "\n") {
		if !strings.HasPrefix(line, "  -") {
			continue
		}
		n++
		name := strings.Fields(line)[0]
		if !strings.Contains(docs.String(), "-"+name) {
			t.Errorf("flag %s is not documented in docs/", name)
		}
	}
	if n < 20 {
		t.Fatalf("read only %d flags from the usage text", n)
	}
}
