// Package keel is the root of the Keel module. It holds no code, only the
// test that keeps the package dependency direction of design.md.
package keel
