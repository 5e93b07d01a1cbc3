package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func spec() Spec {
	return Spec{
		Files: []File{
			{Path: "/usr/local/bin/tool", Mode: 0o755, Content: []byte("#!binary\n")},
			{Path: "/etc/config", Content: []byte("a=1\n")},
			{Path: "/lib64/ld.so", Linkname: "/lib/x86_64-linux-gnu/ld.so"},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/data/owned", Content: []byte("x"), UID: 65532, GID: 65532},
		},
		Entrypoint: []string{"/usr/local/bin/tool"},
		Cmd:        []string{"--help"},
		Env:        []string{"A=b"},
		User:       "65532:65532",
		Labels:     map[string]string{"org.opencontainers.image.revision": "abc"},
		Created:    created,
	}
}

func archive(t *testing.T, s Spec, ref string) ([]byte, string) {
	t.Helper()
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, ref, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), d.String()
}

// TestBuildReproducible: building the same Spec twice gives the same digest and
// the same archive bytes; changing one byte of a file, the creation time or a
// label changes the digest.
func TestBuildReproducible(t *testing.T) {
	a1, d1 := archive(t, spec(), "example.com/tool:v1")
	a2, d2 := archive(t, spec(), "example.com/tool:v1")
	if d1 != d2 || !bytes.Equal(a1, a2) {
		t.Fatalf("two builds differ: %s vs %s, archives equal %v", d1, d2, bytes.Equal(a1, a2))
	}
	s := spec()
	s.Files = append([]File(nil), s.Files...)
	s.Files[0].Content = []byte("#!binarY\n")
	s2 := spec()
	s2.Created = created.Add(time.Second)
	s3 := spec()
	s3.Labels = map[string]string{"org.opencontainers.image.revision": "abd"}
	for i, other := range []Spec{s, s2, s3} {
		if _, d := archive(t, other, "example.com/tool:v1"); d == d1 {
			t.Errorf("variant %d: same digest %s", i, d)
		}
	}
	// File order in the Spec does not matter.
	s4 := spec()
	s4.Files = []File{s4.Files[4], s4.Files[3], s4.Files[2], s4.Files[1], s4.Files[0]}
	if _, d := archive(t, s4, "example.com/tool:v1"); d != d1 {
		t.Errorf("reordered files: digest %s, want %s", d, d1)
	}
}

// TestBuildConfig: the config carries the Spec's entrypoint, user, labels,
// platform and time, and the layer holds the files with their parents.
func TestBuildConfig(t *testing.T) {
	img, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/tool" || strings.Join(c.Cmd, " ") != "--help" || c.User != "65532:65532" ||
		c.Labels["org.opencontainers.image.revision"] != "abc" || strings.Join(c.Env, ",") != "A=b" {
		t.Errorf("config %+v", c)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(created) {
		t.Errorf("os %s arch %s created %v", cf.OS, cf.Architecture, cf.Created)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("manifest %+v", m)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		typ      byte
		mode     int64
		uid      int
		link     string
		content  string
		modified time.Time
	}
	got := map[string]entry{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = entry{h.Typeflag, h.Mode, h.Uid, h.Linkname, string(b), h.ModTime}
		order = append(order, h.Name)
	}
	want := map[string]entry{
		"data/":              {tar.TypeDir, 0o755, 0, "", "", created},
		"data/owned":         {tar.TypeReg, 0o644, 65532, "", "x", created},
		"etc/":               {tar.TypeDir, 0o755, 0, "", "", created},
		"etc/config":         {tar.TypeReg, 0o644, 0, "", "a=1\n", created},
		"lib64/":             {tar.TypeDir, 0o755, 0, "", "", created},
		"lib64/ld.so":        {tar.TypeSymlink, 0o777, 0, "/lib/x86_64-linux-gnu/ld.so", "", created},
		"tmp/":               {tar.TypeDir, 0o1777, 0, "", "", created},
		"usr/":               {tar.TypeDir, 0o755, 0, "", "", created},
		"usr/local/":         {tar.TypeDir, 0o755, 0, "", "", created},
		"usr/local/bin/":     {tar.TypeDir, 0o755, 0, "", "", created},
		"usr/local/bin/tool": {tar.TypeReg, 0o755, 0, "", "#!binary\n", created},
	}
	if len(got) != len(want) {
		t.Errorf("layer has %v, want %d entries", order, len(want))
	}
	for n, w := range want {
		if g, ok := got[n]; !ok || g.typ != w.typ || g.mode != w.mode || g.uid != w.uid || g.link != w.link || g.content != w.content || !g.modified.Equal(w.modified) {
			t.Errorf("%s: got %+v, want %+v", n, g, w)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("layer entries not sorted: %v", order)
		}
	}
}

// TestBuildRefusesBadFiles: relative, unclean and duplicate paths, and a file
// below a file, are errors.
func TestBuildRefusesBadFiles(t *testing.T) {
	for _, files := range [][]File{
		{{Path: "bin/x"}},
		{{Path: "/bin/../x"}},
		{{Path: "/"}},
		{{Path: "/x"}, {Path: "/x"}},
		{{Path: "/x", Content: []byte("f")}, {Path: "/x/y"}},
		{{Path: "/l", Linkname: "/t", Content: []byte("f")}},
	} {
		if _, err := Build(Spec{Files: files}); err == nil {
			t.Errorf("%+v: built", files)
		}
	}
}

// TestWriteArchive: the archive is an OCI image layout whose index names the
// image for containerd (io.containerd.image.name) with its platform, whose
// blobs match their digests, that go-containerregistry reads back as the same
// image, and whose manifest.json names the same blobs for docker load.
func TestWriteArchive(t *testing.T) {
	const ref = "ghcr.io/egressd/tool:v1.2.3"
	ar, digest := archive(t, spec(), ref)
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(ar))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 {
			t.Errorf("%s: time %v uid %d", h.Name, h.ModTime, h.Uid)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		b, _ := io.ReadAll(tr)
		if strings.HasPrefix(h.Name, "blobs/sha256/") {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != strings.TrimPrefix(h.Name, "blobs/sha256/") {
				t.Errorf("%s: content hashes to %x", h.Name, sum)
			}
		}
		os.WriteFile(p, b, 0o644)
	}
	if names[0] != "oci-layout" || names[1] != "index.json" || names[len(names)-1] != "manifest.json" || len(names) != 8 {
		t.Errorf("archive entries %v", names)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	m := im.Manifests[0]
	if m.Digest.String() != digest || m.Annotations[AnnotationImageName] != ref || m.Annotations[AnnotationRefName] != "v1.2.3" ||
		m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
		t.Errorf("index descriptor %+v", m)
	}
	back, err := idx.Image(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(back); err != nil {
		t.Errorf("read back: %v", err)
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(b, &docker); err != nil || len(docker) != 1 || len(docker[0].RepoTags) != 1 || docker[0].RepoTags[0] != ref || len(docker[0].Layers) != 1 {
		t.Fatalf("manifest.json %s (%v)", b, err)
	}
	for _, p := range append(docker[0].Layers, docker[0].Config) {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("manifest.json names %s: %v", p, err)
		}
	}
}

// TestWriteArchiveRefusesShortNames: kubelet asks containerd for the fully
// qualified name, so a name without a registry host (or without a tag) is an
// error rather than an image nobody finds.
func TestWriteArchiveRefusesShortNames(t *testing.T) {
	img, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"", "tool:v1", "egressd/tool:v1", "ghcr.io/egressd/tool", "ghcr.io/Egressd/tool:v1"} {
		if err := WriteArchive(io.Discard, ref, img); err == nil {
			t.Errorf("%q: written", ref)
		}
	}
	for _, ref := range []string{"docker.io/library/tool:v1", "localhost/tool:dev", "registry.k8s.io/pause:3.10", "localhost:5000/a/b:c"} {
		if err := WriteArchive(io.Discard, ref, img); err != nil {
			t.Errorf("%q: %v", ref, err)
		}
	}
}
