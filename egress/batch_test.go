package egress_test

import (
	"context"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/google/nftables"
)

// TestBatchError: a transaction the kernel refuses returns its error (with the
// kernel's reason) instead of hanging or succeeding, and the Enforcer works
// afterwards.
func TestBatchError(t *testing.T) {
	fd := throwawayNetNS(t)
	st := benchStore(t, 2, 10)
	plan, _ := policy.NewCompiler(st, policy.Options{}).Compile()
	// A regular chain named like a base chain: the batch's AddChain (with a
	// hook) fails in the kernel.
	nc, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tab := nc.AddTable(&nftables.Table{Name: "trap", Family: nftables.TableFamilyINet})
	nc.AddChain(&nftables.Chain{Name: "egress", Table: tab})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	bad, err := egress.New(egress.WithNetNS(fd), egress.WithTable("trap"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- bad.Apply(ctx, plan, policy.Changes{Full: true}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("apply over a conflicting chain succeeded")
		}
		t.Logf("error: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("apply hangs on a kernel error")
	}
	good, err := egress.New(egress.WithNetNS(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	for i := 0; i < 2; i++ {
		if err := good.Apply(ctx, plan, policy.Changes{Full: true}); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
}
