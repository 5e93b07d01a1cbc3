package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// UpOptions configure Up (`make cluster`).
type UpOptions struct {
	Dir string
	// Image is egressd's image archive (`make image`).
	Image string
	// Install is kustomize, helm or none.
	Install string
	APIPort int
	// Log receives progress; Out the summary.
	Log, Out io.Writer
}

// Up starts a cluster in o.Dir (refusing when one is recorded there already), installs
// egressd from the repository's deploy/ (kustomize or Helm) and prints how to reach
// it. The cluster keeps running after Up returns; Down stops it.
func Up(ctx context.Context, o UpOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, mounts, cgroups)")
	}
	if _, err := LoadState(o.Dir); err == nil {
		return fmt.Errorf("a cluster is recorded in %s already: make cluster-down first", o.Dir)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	var images []string
	if o.Install != "none" {
		if _, err := os.Stat(o.Image); err != nil {
			return fmt.Errorf("egressd image: %w (make image builds it)", err)
		}
		images = append(images, o.Image)
	}
	start := time.Now()
	c, err := Start(ctx, Options{Dir: o.Dir, Log: o.Log, APIPort: o.APIPort, Images: images})
	if err != nil {
		// Start tore down what it started; the logs stay, the record goes so that the
		// next `make cluster` can start.
		_ = os.Remove(filepath.Join(o.Dir, StateFile))
		return fmt.Errorf("%w (logs in %s)", err, filepath.Join(o.Dir, "logs"))
	}
	switch o.Install {
	case "kustomize":
		err = c.InstallKustomize(ctx, filepath.Join(root, "deploy"))
	case "helm":
		err = c.InstallHelm(ctx, filepath.Join(root, "deploy"))
	case "none":
	default:
		err = fmt.Errorf("-install %q: want kustomize, helm or none", o.Install)
	}
	if err != nil {
		fmt.Fprintf(o.Log, "installing egressd failed; the cluster stays up for a look (make cluster-down removes it)\n")
		return err
	}
	if o.Install != "none" {
		c.step("egressd ready (" + o.Install + ")")
	}
	fmt.Fprintf(o.Out, "%s", c.Summary(root))
	fmt.Fprintf(o.Out, "  up in %s\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// Down tears down the cluster recorded in dir and removes dir.
func Down(dir string, out io.Writer) error {
	s, err := LoadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "no cluster recorded in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.Teardown(); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "cluster %s down in %s\n", s.Name, time.Since(start).Round(100*time.Millisecond))
	return nil
}
