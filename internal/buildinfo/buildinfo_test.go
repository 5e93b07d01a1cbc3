package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	tail := " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.2.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	for _, c := range []struct {
		release string
		bi      *debug.BuildInfo
		want    string
	}{
		{"", bi, "v0.2.0 0123456789ab-dirty"},
		{"v1.0.0", bi, "v1.0.0 0123456789ab-dirty"},
		{"", &debug.BuildInfo{}, "(devel)"},
		{"", nil, "(devel)"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}}, "(devel) abc"},
	} {
		if got := format(c.release, c.bi); got != c.want+tail {
			t.Errorf("format(%q, %+v) = %q, want %q", c.release, c.bi, got, c.want+tail)
		}
	}
	if v := Version(""); !strings.HasSuffix(v, tail) {
		t.Errorf("Version: %q", v)
	}
}
