// Package crds embeds the CustomResourceDefinitions of this directory (written
// by `make generate`), so that file mode validates policies against the very
// schema the API server enforces (policy/manifest).
package crds

import "embed"

// FS holds every *.yaml file of this directory.
//
//go:embed *.yaml
var FS embed.FS
