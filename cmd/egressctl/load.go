package main

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// problem is one error found in the input, as printed by validate.
type problem struct {
	// Source is "file:document" (document counted from 1), or the file.
	Source string `json:"source"`
	// Line is the line of the file (not of the document); 0 when unknown.
	Line int `json:"line,omitempty"`
	// Object is "Kind/namespace/name" or "Kind/name"; empty when unknown.
	Object string `json:"object"`
	// Field is the field path, e.g. spec.egress[0].to[1].cidr; empty when the
	// problem is not about one field.
	Field string `json:"field"`
	// Reason says what is wrong.
	Reason string `json:"reason"`
}

func (p problem) String() string {
	var parts []string
	if p.Source != "" {
		parts = append(parts, p.Source)
	}
	if p.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d", p.Line))
	}
	for _, s := range []string{p.Object, p.Field} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(append(parts, p.Reason), ": ")
}

// policySet is every policy object read from the paths, with the problems found.
type policySet struct {
	files    []string
	objects  []manifest.Object
	problems []problem
}

// readPolicies decodes and validates every policy object of the paths. Decode
// errors, validation errors (one problem per field) and objects defined twice
// are all reported; objects that decoded are kept even when invalid.
func readPolicies(paths []string) *policySet {
	ps := &policySet{}
	seenFile := map[string]bool{}
	for _, path := range paths {
		files, err := manifest.Files(path)
		if err != nil {
			ps.problems = append(ps.problems, problem{Source: path, Reason: pathError(err)})
		}
		for _, f := range files {
			if seenFile[f] {
				continue
			}
			seenFile[f] = true
			ps.files = append(ps.files, f)
			objs, err := manifest.DecodeFile(f)
			ps.objects = append(ps.objects, objs...)
			if err != nil {
				ps.problems = append(ps.problems, decodeProblems(f, err)...)
			}
		}
	}
	defined := map[policy.PolicyRef]string{}
	for i := range ps.objects {
		o := &ps.objects[i]
		ref := o.Ref()
		if err := o.Validate(); err != nil {
			ps.problems = append(ps.problems, validationProblems(o, err)...)
		}
		if prev, dup := defined[ref]; dup {
			ps.problems = append(ps.problems, problem{Source: o.Source, Line: o.FieldLine("metadata.name"), Object: ref.String(), Field: "metadata.name",
				Reason: fmt.Sprintf("Duplicate value: %s is also defined at %s (the later definition would replace it)", ref, prev)})
		} else {
			defined[ref] = fmt.Sprintf("%s (line %d)", o.Source, o.FieldLine("metadata.name"))
		}
	}
	sortProblems(ps.problems, ps.files)
	return ps
}

// sortProblems orders problems by file (in reading order), then document,
// then line, then as found.
func sortProblems(ps []problem, files []string) {
	fileIdx := make(map[string]int, len(files))
	for i, f := range files {
		fileIdx[f] = i
	}
	key := func(p problem) (int, int, string) {
		if i, ok := fileIdx[p.Source]; ok {
			return i, 0, ""
		}
		if i := strings.LastIndex(p.Source, ":"); i >= 0 {
			loc := p.Source[i+1:]
			num, rest, _ := strings.Cut(loc, "/")
			if n, err := strconv.Atoi(num); err == nil {
				if fi, ok := fileIdx[p.Source[:i]]; ok {
					return fi, n, rest
				}
			}
		}
		return -1, 0, "" // paths that could not be read come first
	}
	sort.SliceStable(ps, func(a, b int) bool {
		fa, da, ra := key(ps[a])
		fb, db, rb := key(ps[b])
		if fa != fb {
			return fa < fb
		}
		if da != db {
			return da < db
		}
		if ra != rb {
			return ra < rb
		}
		return ps[a].Line < ps[b].Line
	})
}

// validationProblems turns a *policy.ValidationError into one problem per field.
func validationProblems(o *manifest.Object, err error) []problem {
	ref := o.Ref().String()
	var ve *policy.ValidationError
	if !errors.As(err, &ve) {
		return []problem{{Source: o.Source, Object: ref, Reason: err.Error()}}
	}
	out := make([]problem, 0, len(ve.Errs))
	for _, fe := range ve.Errs {
		out = append(out, problem{Source: o.Source, Line: o.FieldLine(fe.Field), Object: ref, Field: fe.Field, Reason: fe.ErrorBody()})
	}
	return out
}

// pathError shortens an *fs.PathError to "path: reason" without the operation.
func pathError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// model is a loaded store and engine.
type model struct {
	store  *policy.Store
	engine *policy.Engine
}

// loadModel reads policies and workloads into a store. Any invalid policy is
// an error: a verdict computed without it would be misleading.
func loadModel(paths []string, workloadsFile string, opts policy.Options) (*model, []problem, error) {
	ps := readPolicies(paths)
	if len(ps.problems) > 0 {
		return nil, ps.problems, fmt.Errorf("%d problem(s) in the policies (run 'egressctl validate' for details)", len(ps.problems))
	}
	ws, err := manifest.LoadWorkloads(workloadsFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, nil, fmt.Errorf("workloads: %s: %s", workloadsFile, pe.Err)
		}
		return nil, nil, fmt.Errorf("workloads: %v", err)
	}
	s, err := manifest.LoadStore(ps.objects, ws)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", workloadsFile, err)
	}
	return &model{store: s, engine: policy.NewEngine(s, opts)}, nil, nil
}
