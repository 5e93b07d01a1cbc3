// Package ociimage builds small, reproducible OCI images from a list of files
// and writes them as an image archive (an OCI image layout in one tar) that
// containerd imports (`ctr -n k8s.io images import`) with no registry and no
// Docker daemon. It is used by `make image` (hack/image) for egressd's own
// image and by the test cluster for its pause, test-client and CoreDNS images.
//
// Reproducible means: the same Spec gives the same bytes, so the same image
// digest. Every timestamp is Spec.Created, every owner is the one the File
// names (root by default), entries are sorted, and parent directories are
// added with fixed modes.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of the image's filesystem.
type File struct {
	// Path is the absolute path inside the image, e.g. "/usr/local/bin/egressd".
	Path string
	// Mode holds the permission bits (fs.ModePerm, setuid/setgid/sticky);
	// 0 means 0o644 for a file. The type bits are ignored: a File is a
	// regular file unless Linkname is set or it is a directory (fs.ModeDir).
	Mode fs.FileMode
	// Content is the file's content (regular files only).
	Content []byte
	// Linkname, when set, makes the entry a symbolic link to it.
	Linkname string
	// UID and GID own the entry (default 0, root).
	UID, GID int
}

// Spec describes an image: one layer holding Files, and its configuration.
type Spec struct {
	Files []File
	// Entrypoint and Cmd as in the OCI image config.
	Entrypoint []string
	Cmd        []string
	// Env entries, "NAME=value".
	Env []string
	// User the process runs as unless the pod says otherwise, e.g. "0:0" or
	// "65532:65532"; numeric, since the image has no /etc/passwd unless
	// Files adds one.
	User       string
	WorkingDir string
	// Labels are the config's labels (org.opencontainers.image.*).
	Labels map[string]string
	// OS and Architecture, default "linux" and "amd64".
	OS, Architecture string
	// Created is the creation time of the image and the modification time
	// of every file; the zero value means the Unix epoch. Use a fixed time
	// (e.g. the commit's time) for a reproducible digest.
	Created time.Time
}

// Build builds the image Spec describes: an empty base plus one gzip layer,
// OCI media types.
func Build(s Spec) (v1.Image, error) {
	created := s.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	layerTar, err := LayerTar(s.Files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("ociimage: layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "ociimage.Build",
			Comment:   fmt.Sprintf("%d files", len(s.Files)),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("ociimage: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("ociimage: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = orDefault(s.OS, "linux")
	cf.Architecture = orDefault(s.Architecture, "amd64")
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        s.Env,
		User:       s.User,
		WorkingDir: s.WorkingDir,
		Labels:     s.Labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("ociimage: set config: %w", err)
	}
	return img, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// LayerTar returns the uncompressed layer tar of files: sorted by path, every
// parent directory added (0o755, root), every time set to mtime.
func LayerTar(files []File, mtime time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("ociimage: %s: listed twice", f.Path)
		}
		f.Path = p
		entries[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if e, ok := entries[d]; ok {
				if !e.Mode.IsDir() {
					return nil, fmt.Errorf("ociimage: %s: parent %s is not a directory", f.Path, d)
				}
				continue
			}
			entries[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{
			Name:    p,
			Mode:    int64(f.Mode.Perm()) | modeBits(f.Mode),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		switch {
		case f.Mode.IsDir():
			if f.Content != nil || f.Linkname != "" {
				return nil, fmt.Errorf("ociimage: %s: a directory with content or a link", f.Path)
			}
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case f.Linkname != "":
			if f.Content != nil {
				return nil, fmt.Errorf("ociimage: %s: a link with content", f.Path)
			}
			h.Typeflag = tar.TypeSymlink
			h.Linkname = f.Linkname
			h.Mode = 0o777
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.Content))
			if f.Mode.Perm() == 0 {
				h.Mode |= 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("ociimage: %s: %w", f.Path, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Content); err != nil {
				return nil, fmt.Errorf("ociimage: %s: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// modeBits maps setuid, setgid and sticky to their tar header bits.
func modeBits(m fs.FileMode) int64 {
	var b int64
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

// cleanPath turns "/usr/bin/x" into "usr/bin/x", refusing what escapes the root.
func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("ociimage: %q: want an absolute path", p)
	}
	c := path.Clean(p)
	if c == "/" || c != p && c+"/" != p {
		return "", fmt.Errorf("ociimage: %q: want a clean path below /", p)
	}
	return strings.TrimPrefix(c, "/"), nil
}

var errNoRef = errors.New("ociimage: no image reference")
