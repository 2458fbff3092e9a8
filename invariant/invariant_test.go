package invariant

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	Check(true, "never")
	defer func() {
		r := recover()
		v, ok := r.(Violation)
		if !ok || !strings.Contains(v.Error(), "offset 7 after 5") {
			t.Fatalf("panic value %v", r)
		}
		var err error = v
		if !errors.As(err, &v) {
			t.Fatal("a Violation is an error")
		}
	}()
	Check(false, "offset %d after %d", 7, 5)
	t.Fatal("Check(false) returned")
}
