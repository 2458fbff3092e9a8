//go:build !invariants

package invariant

// Enabled turns on the expensive checks (build tag invariants).
const Enabled = false
