// Package file is the standalone policy source: policies from a YAML file or
// directory and workloads from a workloads file (docs/design.md §3), loaded into a
// policy.Store and reloaded when the files change.
//
// A reload never loses what is in force because of a partial write:
//
//   - an object that fails to decode or validate keeps its previous version (if
//     any) and is reported;
//   - a file that exists but holds no object (0 bytes, whitespace or comments
//     only), or that does not decode (a write cut mid-document), is taken as a
//     partial write, not an intent: everything it held stays in force until the
//     file is valid again;
//   - objects that disappeared from files that loaded without a problem are
//     deleted, and so are the objects of a file that was removed: removing the
//     file is how an operator removes its policies (or, for the workloads file,
//     every workload).
//
// Problems are logged once per distinct problem (ERROR), reported through
// Hooks, and summarised by Health.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// Kinds of Problem.
const (
	// ProblemEmpty: the file exists but holds no object (0 bytes, whitespace or
	// comments only, or an empty list): a partial write.
	ProblemEmpty = "empty"
	// ProblemUndecodable: a document of the file does not parse or decode (YAML
	// cut mid-document, unknown kind or field): a partial write or a broken edit.
	ProblemUndecodable = "undecodable"
	// ProblemInvalid: an object decoded but failed validation (a document cut
	// after its last complete line lacks required fields, too).
	ProblemInvalid = "invalid"
	// ProblemUnreadable: the file or directory could not be read (not "does
	// not exist": that is a removal).
	ProblemUnreadable = "unreadable"
	// ProblemTooLarge: the policy source is beyond its limits (bytes of a
	// file or of the directory, number of policies, the store's policy
	// limit): nothing of it was taken.
	ProblemTooLarge = "too-large"
	// ProblemMissing: the path has not existed since the source started (a
	// path that existed and was removed is a removal, not a problem).
	ProblemMissing = "missing"
)

// Problem is one file the last load could not take as it is. Its last good
// content stays in force.
type Problem struct {
	File string // the file, or the --policies path when it could not be listed
	Kind string // Problem* constant
	Err  error
	// Kept is the number of objects (policies, or namespaces and pods) of the
	// file's last good content kept in force because of the problem.
	Kept int
	// NoLastGood: the file has had no good content since the source started,
	// so nothing of it is in force (at start: the agent must not start on it).
	NoLastGood bool
}

// Message is the problem as one line ("kind: file: error", the file named
// once), clipped to about 200 bytes.
func (p Problem) Message() string {
	e := p.Err.Error()
	if !strings.HasPrefix(e, p.File) {
		e = p.File + ": " + e
	}
	return clip(p.Kind + ": " + e)
}

// Hooks are called by Load; every field may be nil. They run with the source's
// lock held and must not call back into the source.
type Hooks struct {
	// Loaded is called after every load that read the files (not after the
	// polls that found them unchanged), with whether it found no problem.
	Loaded func(ok bool)
	// Failed is called once per distinct problem: when a problem appears, or
	// its text changes.
	Failed func(Problem)
	// Recovered is called when a load finds no problem after one that did.
	Recovered func()
}

// Health is the outcome of the last load.
type Health struct {
	OK bool
	// Problems of the last load (empty when OK).
	Problems []Problem
	// LastError is the first problem's message, File its file, Since when the
	// current problems were first seen.
	LastError string
	File      string
	Since     time.Time
	// LastOK is the time of the last load without problems (zero: none yet).
	LastOK time.Time
}

// Source keeps a Store in sync with policy and workload files.
type Source struct {
	store     *policy.Store
	policies  string
	workloads string
	log       *slog.Logger
	hooks     Hooks
	now       func() time.Time

	mu sync.Mutex
	// loaded maps each policy in the store to the hash of its document.
	loaded map[policy.PolicyRef]string
	// fileRefs are the policies in force from each policy file.
	fileRefs map[string]map[policy.PolicyRef]bool
	// pods and nss are the workloads in force from the workloads file;
	// workloadsGood: the workloads file has loaded without a problem once.
	pods map[policy.WorkloadKey]bool
	nss  map[string]bool
	// nsApplied is the version of each namespace last put in the store (an
	// unchanged namespace is not upserted again: that would re-render the
	// whole kernel table).
	nsApplied map[string]policy.Namespace
	// nodesApplied are the nodes of the workloads file last put in the store.
	nodesApplied  map[string]policy.Node
	workloadsGood bool
	// workloadsSeen, policiesSeen: the path existed at a load.
	workloadsSeen, policiesSeen bool
	// stamp is the fingerprint of the files at the last load; stampErr the
	// error that kept it from being taken (the same error again is no change).
	stamp    string
	stampErr string
	problems []Problem
	// reported is the text of the problems last reported (log and Failed).
	reported map[string]bool
	since    time.Time
	lastOK   time.Time
}

// New returns a source for the policy path (file or directory; may be empty)
// and the workloads file (may be empty).
func New(store *policy.Store, policies, workloads string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{store: store, policies: policies, workloads: workloads, log: log, now: time.Now,
		loaded: map[policy.PolicyRef]string{}, fileRefs: map[string]map[policy.PolicyRef]bool{},
		pods: map[policy.WorkloadKey]bool{}, nss: map[string]bool{}, nsApplied: map[string]policy.Namespace{}, nodesApplied: map[string]policy.Node{},
		reported: map[string]bool{}}
}

// SetHooks sets the functions Load reports through; call it before the first Load.
func (s *Source) SetHooks(h Hooks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = h
}

// Errors returns the problems of the last load (invalid objects, unreadable
// or partially written files).
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]error, 0, len(s.problems))
	for _, p := range s.problems {
		out = append(out, p.Err)
	}
	return out
}

// Health returns the outcome of the last load.
func (s *Source) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Health{OK: len(s.problems) == 0, Problems: append([]Problem(nil), s.problems...), LastOK: s.lastOK}
	if len(s.problems) > 0 {
		h.LastError, h.File, h.Since = s.problems[0].Message(), s.problems[0].File, s.since
	}
	return h
}

// Unusable returns an error naming every file of the last load whose content
// is unknown and that has no last good content in force (empty, undecodable,
// too large, unreadable or missing since the source started), or nil. An agent must not start
// enforcing on such files: it would run without what they hold.
func (s *Source) Unusable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, p := range s.problems {
		if p.NoLastGood && p.Kind != ProblemInvalid {
			errs = append(errs, errors.New(p.Message()))
		}
	}
	return errors.Join(errs...)
}

// Load reads the files and brings the store in line with them. It returns
// whether the store changed, and an error joining every problem found; valid
// objects are applied even when others are invalid.
func (s *Source) Load() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamp, err := s.fingerprint()
	if err == nil && stamp == s.stamp || err != nil && err.Error() == s.stampErr {
		return false, s.joined()
	}
	s.stamp, s.stampErr = stamp, "" // "" on error: the next change loads again
	if err != nil {
		s.stampErr = err.Error()
	}
	s.problems = nil
	changed := false
	if s.workloads != "" {
		changed = s.loadWorkloads() || changed
	}
	if s.policies != "" {
		changed = s.loadPolicies() || changed
	}
	s.report()
	return changed, s.joined()
}

func (s *Source) joined() error {
	var errs []error
	for _, p := range s.problems {
		errs = append(errs, p.Err)
	}
	return errors.Join(errs...)
}

func (s *Source) problem(p Problem) { s.problems = append(s.problems, p) }

// report logs and reports the problems of the load that just ran: each
// distinct problem once, and the recovery.
func (s *Source) report() {
	ok := len(s.problems) == 0
	if s.hooks.Loaded != nil {
		s.hooks.Loaded(ok)
	}
	now := s.now()
	if ok {
		if len(s.reported) > 0 {
			s.log.Info("policy files valid again; their content is in force", "since", s.since)
			if s.hooks.Recovered != nil {
				s.hooks.Recovered()
			}
		}
		s.reported = map[string]bool{}
		s.since = time.Time{}
		s.lastOK = now
		return
	}
	if s.since.IsZero() {
		s.since = now
	}
	cur := map[string]bool{}
	for _, p := range s.problems {
		msg := p.Message()
		cur[msg] = true
		if s.reported[msg] {
			continue
		}
		kept := "the objects it held stay in force until it is valid again"
		if p.NoLastGood {
			kept = "nothing of it is in force (no valid content since start)"
		}
		s.log.Error("policy source file not taken; "+kept, "file", p.File, "problem", p.Kind, "kept", p.Kept, "err", clip(p.Err.Error()))
		if s.hooks.Failed != nil {
			s.hooks.Failed(p)
		}
	}
	s.reported = cur
}

// loadWorkloads applies the workloads file; a removed file deletes every
// workload it held, a partial write keeps them.
func (s *Source) loadWorkloads() bool {
	ws, err := manifest.LoadWorkloads(s.workloads) // bounded (DefaultLimits.FileBytes)
	var tl *manifest.TooLargeError
	switch {
	case errors.Is(err, fs.ErrNotExist) && !s.workloadsSeen:
		s.problem(s.workloadsProblem(ProblemMissing, err))
		return false
	case errors.Is(err, fs.ErrNotExist):
		if len(s.pods)+len(s.nss) > 0 {
			s.log.Warn("workloads file removed; its workloads are deleted", "file", s.workloads, "pods", len(s.pods), "namespaces", len(s.nss))
		}
		ws = &policy.Workloads{}
	case errors.As(err, &tl):
		s.workloadsSeen = true
		s.problem(s.workloadsProblem(ProblemTooLarge, err))
		return false
	case isIOError(err):
		s.problem(s.workloadsProblem(ProblemUnreadable, err))
		return false
	case err != nil:
		s.workloadsSeen = true
		s.problem(s.workloadsProblem(ProblemUndecodable, err))
		return false
	default:
		s.workloadsSeen = true
		if len(ws.Namespaces)+len(ws.Pods)+len(ws.Nodes) == 0 {
			size := 0
			if st, err := os.Stat(s.workloads); err == nil {
				size = int(st.Size())
			}
			s.problem(s.workloadsProblem(ProblemEmpty, errNoObjects(size)))
			return false
		}
	}
	// Entries cut or broken: apply the valid ones, delete nothing.
	invalid := invalidEntries(ws)
	changed, err := s.syncWorkloads(ws, invalid == nil)
	if err = errors.Join(invalid, err); err != nil {
		s.problem(s.workloadsProblem(ProblemInvalid, err))
	} else {
		s.workloadsGood = true
	}
	return changed
}

func (s *Source) workloadsProblem(kind string, err error) Problem {
	return Problem{File: s.workloads, Kind: kind, Err: err, Kept: len(s.pods) + len(s.nss), NoLastGood: !s.workloadsGood}
}

// errNoObjects is the error of a file of size bytes that holds no object.
func errNoObjects(size int) error {
	what := "0 bytes"
	if size > 0 {
		what = "only whitespace, comments or empty documents"
	}
	return fmt.Errorf("holds no object (%s): taken as a partial write, not an intent; remove the file to remove what it held", what)
}

// invalidEntries checks what UpsertNamespace and UpsertWorkload would refuse
// on their own (a pod entry cut after its namespace, an address cut short).
func invalidEntries(ws *policy.Workloads) error {
	var errs []error
	for i, ns := range ws.Namespaces {
		if ns.Name == "" {
			errs = append(errs, fmt.Errorf("namespaces[%d]: name is required", i))
		}
	}
	for i, p := range ws.Pods {
		if p.Namespace == "" || p.Name == "" {
			errs = append(errs, fmt.Errorf("pods[%d]: namespace and name are required", i))
		}
		for _, ip := range p.IPs {
			if !ip.IsValid() {
				errs = append(errs, fmt.Errorf("pods[%d]: invalid IP", i))
			}
		}
	}
	return errors.Join(errs...)
}

// syncWorkloads applies ws; with deleteMissing, namespaces and pods no longer
// in ws are deleted. An entry that fails keeps its previous version.
func (s *Source) syncWorkloads(ws *policy.Workloads, deleteMissing bool) (bool, error) {
	var errs []error
	changed := false
	nss := map[string]bool{}
	if !deleteMissing {
		for name := range s.nss {
			nss[name] = true
		}
	}
	for _, ns := range ws.Namespaces {
		if ns.Name == "" {
			continue // invalidEntries reported it
		}
		if old, ok := s.nsApplied[ns.Name]; ok && s.nss[ns.Name] && reflect.DeepEqual(old, ns) {
			nss[ns.Name] = true
			continue
		}
		if err := s.store.UpsertNamespace(ns); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.workloads, err))
			if s.nss[ns.Name] {
				nss[ns.Name] = true
			}
			continue
		}
		nss[ns.Name] = true
		s.nsApplied[ns.Name] = ns
		changed = true
	}
	for name := range s.nss {
		if !nss[name] {
			s.store.DeleteNamespace(name)
			delete(s.nsApplied, name)
			changed = true
		}
	}
	s.nss = nss
	pods := map[policy.WorkloadKey]bool{}
	if !deleteMissing {
		for k := range s.pods {
			pods[k] = true
		}
	}
	// Delete first so that an address moving between pods is not a conflict.
	want := map[policy.WorkloadKey]bool{}
	for _, p := range ws.Pods {
		want[p.Key()] = true
	}
	if deleteMissing {
		for k := range s.pods {
			if !want[k] {
				s.store.DeleteWorkload(k)
				changed = true
			}
		}
	}
	for _, p := range ws.Pods {
		if p.Namespace == "" || p.Name == "" || !validIPs(p.IPs) {
			continue // invalidEntries reported it
		}
		if old, ok := s.store.Workload(p.Key()); ok && sameWorkload(old, p) {
			pods[p.Key()] = true
			continue
		}
		if err := s.store.UpsertWorkload(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.workloads, err))
			if s.pods[p.Key()] {
				pods[p.Key()] = true // its previous version stays
			}
			continue
		}
		pods[p.Key()] = true
		changed = true
	}
	s.pods = pods
	if s.syncNodes(ws.Nodes, deleteMissing, &errs) {
		changed = true
	}
	return changed, errors.Join(errs...)
}

// syncNodes applies the nodes of the workloads file (ClusterNetworkPolicy
// nodes peers); with deleteMissing, nodes no longer listed are deleted.
func (s *Source) syncNodes(nodes []policy.Node, deleteMissing bool, errs *[]error) bool {
	changed := false
	want := map[string]bool{}
	for _, n := range nodes {
		want[n.Name] = true
		if old, ok := s.nodesApplied[n.Name]; ok && reflect.DeepEqual(old, n) {
			continue
		}
		if err := s.store.UpsertNode(n); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", s.workloads, err))
			continue
		}
		s.nodesApplied[n.Name] = n
		changed = true
	}
	if deleteMissing {
		for name := range s.nodesApplied {
			if !want[name] {
				s.store.DeleteNode(name)
				delete(s.nodesApplied, name)
				changed = true
			}
		}
	}
	return changed
}

func validIPs(ips []netip.Addr) bool {
	for _, ip := range ips {
		if !ip.IsValid() {
			return false
		}
	}
	return true
}

func sameWorkload(a, b policy.Workload) bool {
	return reflect.DeepEqual(a, normalizeIPs(b))
}

func normalizeIPs(w policy.Workload) policy.Workload {
	for i, ip := range w.IPs {
		w.IPs[i] = ip.Unmap()
	}
	return w
}

// fileObjects are the objects decoded from one policy file.
type fileObjects struct {
	file string
	objs []manifest.Object
	// bad: the file has a problem; what it held before stays in force.
	bad bool
}

// loadPolicies applies the policy files. A removed file (or path) deletes the
// policies it held; a file with a problem keeps them.
func (s *Source) loadPolicies() bool {
	files, err := manifest.Files(s.policies)
	if errors.Is(err, fs.ErrNotExist) && !s.policiesSeen {
		s.problem(Problem{File: s.policies, Kind: ProblemMissing, Err: err, NoLastGood: true})
		return false
	}
	if errors.Is(err, fs.ErrNotExist) {
		files, err = nil, nil
	} else if err == nil {
		s.policiesSeen = true
	}
	if err != nil {
		kept := 0
		for _, refs := range s.fileRefs {
			kept += len(refs)
		}
		s.problem(Problem{File: s.policies, Kind: ProblemUnreadable, Err: err, Kept: kept, NoLastGood: len(s.fileRefs) == 0})
		return false
	}
	kept := func() int {
		n := 0
		for _, refs := range s.fileRefs {
			n += len(refs)
		}
		return n
	}
	if err := manifest.DefaultLimits.CheckFiles(s.policies, files); err != nil {
		// Beyond the limits of a policy source: nothing is decoded.
		s.problem(Problem{File: s.policies, Kind: ProblemTooLarge, Err: err, Kept: kept(), NoLastGood: len(s.fileRefs) == 0})
		return false
	}
	var all []fileObjects
	total := 0
	for _, f := range files {
		objs, err := manifest.DecodeFile(f)
		if total += len(objs); total > manifest.DefaultLimits.Objects {
			err := &manifest.TooLargeError{Source: s.policies, What: "policies", Count: int64(total), Limit: int64(manifest.DefaultLimits.Objects)}
			s.problem(Problem{File: s.policies, Kind: ProblemTooLarge, Err: err, Kept: kept(), NoLastGood: len(s.fileRefs) == 0})
			return false
		}
		fo := fileObjects{file: f, objs: objs}
		switch {
		case err != nil:
			fo.bad = true
			kind := ProblemUndecodable
			var tl *manifest.TooLargeError
			if errors.As(err, &tl) {
				kind = ProblemTooLarge
			} else if isIOError(err) {
				kind = ProblemUnreadable
			}
			s.problem(s.policyProblem(f, kind, err))
		case len(objs) == 0:
			fo.bad = true
			size := 0
			if st, err := os.Stat(f); err == nil {
				size = int(st.Size())
			}
			s.problem(s.policyProblem(f, ProblemEmpty, errNoObjects(size)))
		}
		all = append(all, fo)
	}
	for f := range s.fileRefs {
		if !contains(files, f) {
			s.log.Warn("policy file removed; its policies are deleted", "file", f, "policies", len(s.fileRefs[f]))
			delete(s.fileRefs, f)
		}
	}
	return s.syncPolicies(all)
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// isIOError reports whether err is an operating-system error rather than a
// decoding one.
func isIOError(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe)
}

func (s *Source) policyProblem(file, kind string, err error) Problem {
	refs, ok := s.fileRefs[file]
	return Problem{File: file, Kind: kind, Err: err, Kept: len(refs), NoLastGood: !ok}
}

// syncPolicies applies the decoded objects of every file and deletes the
// policies no file holds any more; the files with a problem keep everything
// they held.
//
// The changes are applied as one batch (policy.Store.ApplyPolicies): lookups
// see the old policies or the new ones, never a mix, and a load that would
// exceed the store's policy limit changes nothing.
func (s *Source) syncPolicies(all []fileObjects) bool {
	var batch policy.PolicyBatch
	hashes := map[policy.PolicyRef]string{}
	prevRefs := maps.Clone(s.fileRefs)
	seen := map[policy.PolicyRef]bool{}
	keep := map[policy.PolicyRef]bool{}
	for i := range all {
		fo := &all[i]
		var errs []error
		applied := map[policy.PolicyRef]bool{}
		for j := range fo.objs {
			o := &fo.objs[j]
			ref := o.Ref()
			if seen[ref] {
				errs = append(errs, fmt.Errorf("%s: %s defined twice; the first definition is used", o.Source, policy.Truncate(ref.String())))
				continue
			}
			seen[ref] = true
			h := hashObject(o)
			if s.loaded[ref] == h {
				applied[ref] = true
				continue
			}
			if err := o.AddTo(&batch); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o.Source, err))
				continue
			}
			hashes[ref] = h
			applied[ref] = true
		}
		if len(errs) > 0 && !fo.bad {
			fo.bad = true
			s.problem(s.policyProblem(fo.file, ProblemInvalid, errors.Join(errs...)))
		} else if len(errs) > 0 {
			// Add the objects' errors to the file's problem.
			for k := range s.problems {
				if p := &s.problems[k]; p.File == fo.file {
					p.Err = errors.Join(append([]error{p.Err}, errs...)...)
					break
				}
			}
		}
		_, hadGood := s.fileRefs[fo.file]
		if fo.bad {
			// What the file held stays in force, at the version in the store.
			for ref := range s.fileRefs[fo.file] {
				applied[ref] = true
			}
		}
		if !fo.bad || hadGood || len(applied) > 0 {
			s.fileRefs[fo.file] = applied
		}
		for ref := range applied {
			keep[ref] = true
		}
	}
	var gone []policy.PolicyRef
	for ref := range s.loaded {
		if !keep[ref] {
			batch.DeletePolicy(ref)
			gone = append(gone, ref)
		}
	}
	if err := s.store.ApplyPolicies(&batch); err != nil {
		s.fileRefs = prevRefs
		kept := 0
		for _, refs := range s.fileRefs {
			kept += len(refs)
		}
		kind := ProblemInvalid
		var le *policy.PolicyLimitError
		if errors.As(err, &le) {
			kind = ProblemTooLarge
		}
		s.problem(Problem{File: s.policies, Kind: kind, Err: err, Kept: kept, NoLastGood: len(s.fileRefs) == 0})
		return false
	}
	for ref, h := range hashes {
		s.loaded[ref] = h
	}
	for _, ref := range gone {
		delete(s.loaded, ref)
	}
	return batch.Len() > 0
}

func hashObject(o *manifest.Object) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#v|%#v|%#v|%#v", o.FirewallPolicy, o.ClusterFirewallPolicy, o.NetworkPolicy, o.ClusterNetworkPolicy)
	return string(h.Sum(nil))
}

// fingerprint summarizes names, sizes and modification times of the files; a
// path that does not exist counts as such (its removal is a change).
func (s *Source) fingerprint() (string, error) {
	h := sha256.New()
	var files []string
	for _, root := range []string{s.policies, s.workloads} {
		if root == "" {
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(h, "%s|absent\n", root)
			continue
		}
		if err != nil {
			return "", err
		}
	}
	sort.Strings(files)
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s|%d|%d\n", f, st.Size(), st.ModTime().UnixNano())
	}
	return string(h.Sum(nil)), nil
}

// Watch reloads the files every interval until ctx ends, calling onChange after
// each load that changed the store. Problems are logged by Load, once each.
func (s *Source) Watch(ctx context.Context, interval time.Duration, onChange func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, _ := s.Load()
		if changed && onChange != nil {
			onChange()
		}
	}
}

// clip truncates s to about policy.MaxErrorValue bytes (policy.Truncate, the
// one truncation helper of errors and logs): error texts in Problem and Health
// never echo a huge value from a file whole.
func clip(s string) string { return policy.Truncate(s) }
