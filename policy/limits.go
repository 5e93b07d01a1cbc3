package policy

import (
	"fmt"
	"unicode/utf8"
)

// MaxPolicies is how many policies a Store holds by default (all kinds
// together; see docs/policy.md, "Limits"). Lookups do not slow down with the
// number of policies (the FQDN index), but compiling, the kernel rules and
// memory grow with it: 20,000 is twice the 10,000 Admin policies the agent is
// tested with.
const MaxPolicies = 20000

// PolicyLimitError is returned when adding a policy would exceed the store's
// limit; the store is unchanged.
type PolicyLimitError struct {
	// Policy is the refused policy (the first new one of a batch).
	Policy PolicyRef
	// Limit is the store's limit and Count the number of policies the change
	// would have left (0 for a single policy: Limit+1).
	Limit, Count int
}

func (e *PolicyLimitError) Error() string {
	if e.Count > 0 {
		return fmt.Sprintf("policy limit: the change would leave %d policies, more than the limit of %d; nothing applied (first new policy %s)", e.Count, e.Limit, Truncate(e.Policy.String()))
	}
	return fmt.Sprintf("policy limit: the store already holds %d policies, the limit; %s refused", e.Limit, Truncate(e.Policy.String()))
}

// SetPolicyLimit sets how many policies the store holds; n <= 0 restores
// MaxPolicies. Policies already in the store stay; only additions are refused.
func (s *Store) SetPolicyLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxPolicies = n
}

func (s *Store) policyLimitLocked() int {
	if s.maxPolicies <= 0 {
		return MaxPolicies
	}
	return s.maxPolicies
}

// MaxErrorValue is about how many bytes of a user-supplied value an error
// message or a log line repeats: a 1 MB label value in a policy must not
// become a 1 MB log line.
const MaxErrorValue = 200

// Truncate returns s when it is at most MaxErrorValue bytes long; otherwise
// its beginning and its end (about MaxErrorValue bytes together, cut at UTF-8
// boundaries) around a note of its full length. The end is kept because
// messages often close with the reason ("…": must be no more than 63
// characters). Every error and log line that echoes a value taken from a
// policy, a file or the wire goes through it.
func Truncate(s string) string {
	if len(s) <= MaxErrorValue {
		return s
	}
	head, tail := MaxErrorValue*3/4, len(s)-MaxErrorValue/4
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	for tail < len(s) && !utf8.RuneStart(s[tail]) {
		tail++
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:head], len(s), s[tail:])
}
