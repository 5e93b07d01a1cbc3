// Package domain owns the DNS name patterns of FQDN policy rules
// (matchName and matchPattern) and a fast matcher over many of them.
//
// Pattern syntax (see README.md for the table):
//
//   - An exact name such as "api.github.com" matches only that name.
//   - "*" inside a label matches zero or more characters of that one label and
//     never crosses a dot: "*.example.com" matches "a.example.com" but neither
//     "a.b.example.com" nor "example.com"; "xmr-*.com" matches "xmr-pool.com"
//     and "xmr-.com"; "*pool*.com" and "example.*" are allowed. A label that is
//     only "*" matches exactly one whole (non-empty) label.
//   - A leading "**." matches one or more whole labels: "**.s3.amazonaws.com"
//     matches "a.s3.amazonaws.com" and "a.b.s3.amazonaws.com" but not
//     "s3.amazonaws.com". "**" anywhere else is invalid.
//   - The bare pattern "*" matches every valid (non-empty) name.
//
// Matching is case-insensitive (ASCII) and on the absolute name: one trailing
// dot on either the pattern or the name is ignored.
//
// Patterns may contain letters, digits, '-', '_' and '*', with '.' as the
// label separator; labels are 1 to 63 bytes, the whole pattern at most 253
// bytes (after removing a trailing dot). Query names (see [NormalizeName]) may
// contain any byte except that '.' always separates labels; they obey the
// same length rules.
//
// [Pattern] is the reference implementation of the semantics; [Set] answers
// the same question for thousands of patterns at once with a trie keyed by
// reversed labels, and always agrees with [Pattern.Match].
package domain
