package main

import (
	"errors"

	"github.com/egressd/egressd/policy/manifest"
)

// decodeProblems turns the (joined) error of manifest.DecodeFile into
// problems: manifest reports each as a *manifest.Problem with its document,
// line, object and field path; anything else (a file that cannot be read) is
// a problem of the file.
func decodeProblems(file string, err error) []problem {
	var out []problem
	for _, leaf := range leaves(err) {
		var mp *manifest.Problem
		if errors.As(leaf, &mp) {
			out = append(out, problem{Source: mp.Source, Line: mp.Line, Object: mp.Object, Field: mp.Field, Reason: mp.Reason})
			continue
		}
		out = append(out, problem{Source: file, Reason: pathError(leaf)})
	}
	return out
}

// leaves flattens errors.Join trees.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}
