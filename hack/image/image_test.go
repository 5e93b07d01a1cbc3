package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/internal/ociimage"
	"github.com/egressd/egressd/test/testenv"
)

// repoRoot is the module's root, two levels up from hack/image.
func repoRoot(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// buildImage runs the build `make image` runs, writing into a temporary
// directory.
func buildImage(t *testing.T, o options) result {
	t.Helper()
	testenv.SkipShort(t, "builds both binaries")
	if o.out == "" {
		o.out = filepath.Join(t.TempDir(), "egressd-image.tar")
	}
	var log bytes.Buffer
	r, err := build(o, &log)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	return r
}

// readArchive unpacks the archive and reads it back as an OCI image layout:
// the image and the name the index gives it.
func readArchive(t *testing.T, archive string) (v1.Image, string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	untar(t, f, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("image in the archive: %v", err)
	}
	return img, im.Manifests[0].Annotations[ociimage.AnnotationImageName]
}

// untar writes the tar r into dir (regular files and directories only) and
// returns the entries' names.
func untar(t *testing.T, r io.Reader, dir string) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, os.FileMode(h.Mode)&0o777); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: unexpected tar entry type %c", h.Name, h.Typeflag)
		}
	}
}

// daemonSet decodes deploy/daemonset.yaml.
func daemonSet(t *testing.T, root string) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	b, err := os.ReadFile(filepath.Join(root, "deploy/daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

// kustomizeImage is the image the DaemonSet of deploy/ runs after the
// kustomization's images: rewrite.
func kustomizeImage(t *testing.T, root string) string {
	t.Helper()
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	image := daemonSet(t, root).Spec.Template.Spec.Containers[0].Image
	name, _, _ := strings.Cut(image, ":")
	for _, i := range k.Images {
		if i.Name == name {
			if i.NewName != "" {
				name = i.NewName
			}
			image = name + ":" + i.NewTag
		}
	}
	return image
}

// TestImage builds the image as `make image` does and checks what the
// DaemonSet relies on: the name both install paths use, egressd as the
// entrypoint, the DaemonSet's user, the OCI labels, one layer with exactly the
// two static binaries, a modules list, and that the binaries taken out of the
// image run.
func TestImage(t *testing.T) {
	root := repoRoot(t)
	created := time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC)
	r := buildImage(t, options{dir: root, revision: "0123456789abcdef0123456789abcdef01234567", created: created})
	img, ref := readArchive(t, r.Archive)

	repo, appVersion, err := chartImage(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := repo + ":" + appVersion; ref != want || r.Image != want {
		t.Errorf("archive names the image %q (build said %q), want the chart's %q", ref, r.Image, want)
	}
	if k := kustomizeImage(t, root); k != ref {
		t.Errorf("deploy/ (kustomize) runs %q, the archive holds %q", k, ref)
	}
	d, _ := img.Digest()
	if d.String() != r.Digest {
		t.Errorf("archive's image %s, build reported %s", d, r.Digest)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ds := daemonSet(t, root)
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil {
		t.Fatal("deploy/daemonset.yaml: the container sets no runAsUser/runAsGroup")
	}
	if want := strconv.FormatInt(*sc.RunAsUser, 10) + ":" + strconv.FormatInt(*sc.RunAsGroup, 10); cf.Config.User != want {
		t.Errorf("image user %q, the DaemonSet runs as %q", cf.Config.User, want)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/egressd"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(created) {
		t.Errorf("platform %s/%s created %v", cf.OS, cf.Architecture, cf.Created)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/egressd/egressd",
		"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
		"org.opencontainers.image.version":  appVersion,
		"org.opencontainers.image.created":  "2026-05-04T03:02:01Z",
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	fsDir := t.TempDir()
	names := untar(t, rc, fsDir)
	rc.Close()
	want := []string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/egressctl", "usr/local/bin/egressd"}
	if !slices.Equal(names, want) {
		t.Errorf("layer holds %v, want %v", names, want)
	}

	egressd := filepath.Join(fsDir, "usr/local/bin/egressd")
	out, err := exec.Command(egressd, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-intercept-dns") {
		t.Errorf("egressd --help from the image: %v\n%.500s", err, out)
	}
	out, err = exec.Command(filepath.Join(fsDir, "usr/local/bin/egressctl"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "egressctl "+appVersion) {
		t.Errorf("egressctl version from the image: %v: %q, want egressctl %s", err, out, appVersion)
	}
	for _, bin := range []string{egressd, filepath.Join(fsDir, "usr/local/bin/egressctl")} {
		out, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"-trimpath=true", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"} {
			if !strings.Contains(string(out), s) {
				t.Errorf("%s built without %s:\n%s", filepath.Base(bin), s, out)
			}
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v): it needs a libc the empty base lacks", filepath.Base(bin), p.Type)
			}
		}
		f.Close()
	}

	mods, err := os.ReadFile(r.Modules)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"egressd: go1.", "egressctl: go1.", "\tmod\tgithub.com/egressd/egressd\t", "\tdep\tgithub.com/miekg/dns\tv", "\tdep\tgithub.com/google/nftables\tv"} {
		if !bytes.Contains(mods, []byte(s)) {
			t.Errorf("modules list %s lacks %q", r.Modules, s)
		}
	}
	if bytes.Contains(mods, []byte(os.TempDir())) {
		t.Errorf("modules list names the temporary build directory:\n%.300s", mods)
	}
	t.Logf("image %s %s, archive %d bytes", r.Image, r.Digest, r.Size)
}

// TestImageReproducible builds the image of the checked-out commit twice, from
// two clones in different directories, the second with an empty build cache,
// and wants the same digest and the same archive bytes.
func TestImageReproducible(t *testing.T) {
	testenv.SkipShort(t, "builds the binaries twice, once with an empty build cache")
	root := repoRoot(t)
	git := testenv.RequireTools(t, "git")[0]
	head, err := exec.Command(git, "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		testenv.Unavailable(t, "not a git checkout: %v", err)
	}
	var results []result
	var archives [][]byte
	for i, env := range [][]string{nil, {"GOCACHE=" + t.TempDir()}} {
		clone := filepath.Join(t.TempDir(), "clone"+strconv.Itoa(i))
		if out, err := exec.Command(git, "clone", "--quiet", "--no-hardlinks", root, clone).CombinedOutput(); err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		if out, err := exec.Command(git, "-C", clone, "checkout", "--quiet", "--detach", strings.TrimSpace(string(head))).CombinedOutput(); err != nil {
			t.Fatalf("git checkout: %v\n%s", err, out)
		}
		r := buildImage(t, options{dir: clone, out: filepath.Join(clone, "bin", "egressd-image.tar"), goEnv: env})
		b, err := os.ReadFile(r.Archive)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
		archives = append(archives, b)
	}
	if results[0].Digest != results[1].Digest || !bytes.Equal(archives[0], archives[1]) {
		t.Fatalf("same commit, two images: %s and %s (archives equal: %v)", results[0].Digest, results[1].Digest, bytes.Equal(archives[0], archives[1]))
	}
	t.Logf("commit %.12s: %s twice, archive %d bytes", head, results[0].Digest, results[0].Size)
}
