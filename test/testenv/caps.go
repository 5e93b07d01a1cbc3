package testenv

import (
	"slices"
	"strings"
)

// DefaultContainerCaps is the capability set containerd and CRI-O give a
// container that asks for nothing (the OCI runtime defaults), without the
// CAP_ prefix.
var DefaultContainerCaps = []string{
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// EffectiveCaps returns the capabilities a container running as root ends up
// with under the runtime defaults: the defaults minus drop ("ALL" drops every
// one) plus add, sorted, upper case, without the CAP_ prefix.
func EffectiveCaps(add, drop []string) []string {
	norm := func(c string) string { return strings.TrimPrefix(strings.ToUpper(c), "CAP_") }
	var out []string
	if !slices.ContainsFunc(drop, func(d string) bool { return norm(d) == "ALL" }) {
		for _, c := range DefaultContainerCaps {
			if !slices.ContainsFunc(drop, func(d string) bool { return norm(d) == c }) {
				out = append(out, c)
			}
		}
	}
	for _, c := range add {
		if c = norm(c); !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}
