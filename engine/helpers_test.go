package engine

import (
	"testing"

	"keel/ring"
)

func openBackend(t testing.TB, kind ring.Kind) ring.Backend {
	t.Helper()
	b, err := ring.OpenKind(kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
