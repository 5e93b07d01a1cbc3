// Package buildinfo is the version both binaries print: the release version
// set at link time, else the module version, with the VCS revision that go
// build recorded.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version returns "VERSION [REVISION[-dirty]] GOVERSION OS/ARCH". release is
// the version set with -ldflags "-X main.version=…" ("" when not set); without
// it the main module's version from the build info is used, "(devel)" for a
// build from a checkout.
func Version(release string) string {
	bi, _ := debug.ReadBuildInfo()
	return format(release, bi)
}

func format(release string, bi *debug.BuildInfo) string {
	v := release
	var rev string
	var dirty bool
	if bi != nil {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	out := v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " " + rev
		if dirty {
			out += "-dirty"
		}
	}
	return fmt.Sprintf("%s %s %s/%s", out, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
