package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the index's manifest descriptor that name the image.
// containerd's importer takes AnnotationImageName as the image name.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// WriteArchive writes img to w as one tar holding an OCI image layout
// (oci-layout, index.json, blobs/sha256/…) and, for `docker load`, a
// manifest.json naming the same blobs. ref is the fully qualified name the
// importer gives the image, e.g. "ghcr.io/egressd/egressd:v0.1.0"; it must
// start with a registry host, as containerd and kubelet compare full names.
// The same image and ref give the same bytes.
func WriteArchive(w io.Writer, ref string, img v1.Image) error {
	tag, err := parseRef(ref)
	if err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("ociimage: manifest: %w", err)
	}
	mDigest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("ociimage: digest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("ociimage: media type: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("ociimage: config: %w", err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("ociimage: config: %w", err)
	}
	cDigest, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("ociimage: config digest: %w", err)
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Size:      int64(len(manifest)),
			Digest:    mDigest,
			Annotations: map[string]string{
				AnnotationImageName: ref,
				AnnotationRefName:   tag,
			},
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("ociimage: index: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("ociimage: layers: %w", err)
	}
	docker := []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{Config: blobPath(cDigest), RepoTags: []string{ref}}}

	aw := archiveWriter{tw: tar.NewWriter(w)}
	aw.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	aw.file("index.json", indexJSON)
	aw.dir("blobs/")
	aw.dir("blobs/sha256/")
	// Blobs in digest order, each once.
	type blob struct {
		digest v1.Hash
		write  func() error
	}
	blobs := []blob{
		{mDigest, func() error { aw.file(blobPath(mDigest), manifest); return aw.err }},
		{cDigest, func() error { aw.file(blobPath(cDigest), config); return aw.err }},
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("ociimage: layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("ociimage: layer size: %w", err)
		}
		docker[0].Layers = append(docker[0].Layers, blobPath(d))
		blobs = append(blobs, blob{d, func() error {
			rc, err := l.Compressed()
			if err != nil {
				return fmt.Errorf("ociimage: layer %s: %w", d, err)
			}
			defer rc.Close()
			aw.stream(blobPath(d), size, rc)
			return aw.err
		}})
	}
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.digest.String(), b.digest.String()) })
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.digest == b.digest })
	for _, b := range blobs {
		if err := b.write(); err != nil {
			return err
		}
	}
	dockerJSON, err := json.Marshal(docker)
	if err != nil {
		return fmt.Errorf("ociimage: manifest.json: %w", err)
	}
	aw.file("manifest.json", dockerJSON)
	if aw.err != nil {
		return aw.err
	}
	if err := aw.tw.Close(); err != nil {
		return fmt.Errorf("ociimage: archive: %w", err)
	}
	return nil
}

// WriteArchiveFile writes the archive of img to path, replacing it only once
// the whole archive is written.
func WriteArchiveFile(path, ref string, img v1.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := WriteArchive(tmp, ref, img); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("ociimage: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	return nil
}

// parseRef checks ref is "host/path:tag" and returns the tag.
func parseRef(ref string) (string, error) {
	if ref == "" {
		return "", errNoRef
	}
	t, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("ociimage: image reference %q: %w", ref, err)
	}
	host, _, ok := strings.Cut(ref, "/")
	if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return "", fmt.Errorf("ociimage: image reference %q: want a registry host first, e.g. docker.io/library/%s", ref, ref)
	}
	return t.TagStr(), nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// archiveWriter writes tar entries with fixed times and owners, keeping the
// first error.
type archiveWriter struct {
	tw  *tar.Writer
	err error
}

var epoch = time.Unix(0, 0)

func (a *archiveWriter) dir(name string) {
	if a.err == nil {
		a.err = a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
}

func (a *archiveWriter) file(name string, b []byte) {
	a.stream(name, int64(len(b)), bytes.NewReader(b))
}

func (a *archiveWriter) stream(name string, size int64, r io.Reader) {
	if a.err != nil {
		return
	}
	if a.err = a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}); a.err != nil {
		return
	}
	n, err := io.Copy(a.tw, r)
	switch {
	case err != nil:
		a.err = fmt.Errorf("ociimage: %s: %w", name, err)
	case n != size:
		a.err = fmt.Errorf("ociimage: %s: wrote %d bytes, want %d", name, n, size)
	}
}
