package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/egressd/egressd/internal/ociimage"
)

// helperCommands are this package's programs that run on the node: the pause
// container, the test client/server and the API server forwarder.
var helperCommands = []string{"pause", "probe", "forward"}

// buildHelpers builds the helperCommands (static) into dir.
func buildHelpers(ctx context.Context, dir string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, c := range helperCommands {
		args = append(args, "./test/cluster/cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// moduleRoot is the directory of the egressd module (go.mod), found from the working
// directory as the go command finds it.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the egressd module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// oneBinaryImage is an image holding only the binary at path (as /name) and, for a
// dynamically linked one, the shared libraries it needs.
func oneBinaryImage(path, name string, libs bool, args ...string) (ociimage.Spec, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return ociimage.Spec{}, err
	}
	files := []ociimage.File{{Path: "/" + name, Mode: 0o755, Content: content}}
	if libs {
		lf, err := sharedLibs(path)
		if err != nil {
			return ociimage.Spec{}, err
		}
		files = append(files, lf...)
	}
	return ociimage.Spec{Files: files, Entrypoint: append([]string{"/" + name}, args...), User: "0:0"}, nil
}

// sharedLibs returns the files `ldd bin` lists (the dynamic loader and every library),
// each at the path ldd names, with the content of the file it resolves to.
func sharedLibs(bin string) ([]ociimage.File, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, out)
	}
	var files []ociimage.File
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has no file.
		f := strings.Fields(sc.Text())
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			p = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		default:
			continue
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return nil, err
		}
		files = append(files, ociimage.File{Path: p, Mode: 0o755, Content: b})
	}
	return files, sc.Err()
}

// writeImage builds spec and writes it as an image archive named ref to path.
func writeImage(path, ref string, spec ociimage.Spec) error {
	img, err := ociimage.Build(spec)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return ociimage.WriteArchiveFile(path, ref, img)
}

// nodeImages writes the archives of the images every cluster needs (pause, probe,
// CoreDNS) into dir and returns their paths.
func nodeImages(binDir, corednsBin, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type img struct {
		ref, file, bin, name string
		libs                 bool
		args                 []string
	}
	var paths []string
	for _, i := range []img{
		{PauseImage, "pause.tar", filepath.Join(binDir, "pause"), "pause", false, nil},
		{ProbeImage, "probe.tar", filepath.Join(binDir, "probe"), "probe", false, nil},
		{CoreDNSImage, "coredns.tar", corednsBin, "coredns", true, nil},
	} {
		spec, err := oneBinaryImage(i.bin, i.name, i.libs, i.args...)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, i.file)
		if err := writeImage(p, i.ref, spec); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}
