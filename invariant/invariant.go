// Package invariant asserts what must always hold in Keel's state: a
// broken invariant is a bug, and the process stops at once (a panic)
// rather than write or serve damaged state (TigerBeetle's assertions;
// style.md, "Errors, three kinds").
//
// Check is always on: call it where the test is cheap. Expensive checks
// (a walk over a table, a scan) go behind Enabled, which the build tag
// `invariants` turns on; `make test` (and so CI) runs every test both ways.
package invariant

import "fmt"

// Check panics with the formatted message when cond is false.
func Check(cond bool, format string, args ...any) {
	if !cond {
		panic(Violation(fmt.Sprintf(format, args...)))
	}
}

// Violation is the panic value of a broken invariant.
type Violation string

func (v Violation) Error() string { return "invariant violated: " + string(v) }
