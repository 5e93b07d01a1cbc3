package kubeapi

import (
	"strings"
	"testing"
)

func TestToolsGoMod(t *testing.T) {
	in := []byte(`module k8s.io/kubernetes

go 1.25.0

require (
	k8s.io/api v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apiextensions-apiserver => ./staging/src/k8s.io/apiextensions-apiserver
	k8s.io/api => ./staging/src/k8s.io/api
)
replace k8s.io/kms => ./staging/src/k8s.io/kms
`)
	got, err := toolsGoMod(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"require k8s.io/kubernetes " + Version,
		"\tk8s.io/api => k8s.io/api " + StagingVersion + "\n",
		"\tk8s.io/apiextensions-apiserver => k8s.io/apiextensions-apiserver " + StagingVersion + "\n",
		"\tk8s.io/kms => k8s.io/kms " + StagingVersion + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("tools go.mod lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "k8s.io/api =>") != 1 {
		t.Errorf("duplicate replace:\n%s", got)
	}
	if _, err := toolsGoMod([]byte("module x\n")); err == nil {
		t.Error("no staging replaces: want an error")
	}
}
