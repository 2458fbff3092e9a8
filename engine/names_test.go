package engine

import (
	"regexp"
	"strings"
	"testing"
)

// topicNameSpec is the rule ValidTopicName implements by hand.
var topicNameSpec = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

func TestValidTopicName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"Orders.v2_eu-west", true},
		{"a", true},
		{strings.Repeat("x", 249), true},
		{strings.Repeat("x", 250), false},
		{"", false},
		{".", false},
		{"..", false},
		{"...", true},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"a\x00", false},
		{"topic%20", false},
	} {
		if got := ValidTopicName(tc.name); got != tc.ok {
			t.Errorf("ValidTopicName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// FuzzValidTopicName checks the table-driven check against the regexp it
// replaced.
func FuzzValidTopicName(f *testing.F) {
	for _, s := range []string{"orders", ".", "..", "a/b", strings.Repeat("x", 250)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		want := topicNameSpec.MatchString(name) && name != "." && name != ".."
		if got := ValidTopicName(name); got != want {
			t.Fatalf("ValidTopicName(%q) = %v, the rule says %v", name, got, want)
		}
	})
}
