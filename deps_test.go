package keel_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedImports is the dependency direction of design.md:
// cmd → httpfront → replication → engine → ring, with netio a leaf used by
// httpfront and replication, invariant a leaf every layer may assert with,
// and bench and chaos speaking only HTTP.
var allowedImports = map[string][]string{
	"cmd/keel":           {"httpfront", "replication", "engine", "ring", "netio", "bench", "invariant", "chaos", "housekeeping", "engine/logstore", "engine/record", "cli"}, // chaos: its link proxy, in the cluster tests
	"cli":                {},                                                                                                                                                // a client: HTTP only, like curl
	"housekeeping":       {"engine", "replication", "ring", "engine/logstore"},                                                                                              // the leader's periodic proposals (retention trims); ring and logstore in its tests
	"httpfront":          {"replication", "engine", "engine/query", "netio", "ring", "invariant"},
	"replication":        {"engine", "netio", "ring", "invariant"},
	"engine":             {"ring", "invariant", "engine/record", "engine/logstore", "engine/vfs"},
	"engine/logstore":    {"ring", "invariant", "engine/record", "engine/vfs"}, // segments, index, reads, recovery, truncation
	"engine/query":       {"engine", "engine/logstore", "engine/record"},       // stream queries and joins: the read side only
	"engine/record":      {},                                                   // the record codec: pure, imports no Keel package
	"engine/vfs":         {},                                                   // the metadata I/O seam
	"engine/vfs/vfstest": {"engine/vfs", "ring"},                               // test wrappers: failing calls, crashes (a Backend too)
	"ring":               {"invariant"},
	"netio":              {},
	"bench":              {},
	"chaos":              {}, // the chaos suite: starts keel processes, speaks HTTP to them
	"invariant":          {},
}

const module = "keel"

// TestDependencyDirection fails when a package imports a keel package that
// design.md does not allow it to (tests included), or when a new top-level
// package appears without a rule.
func TestDependencyDirection(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata" || d.Name() == "bin" || d.Name() == "data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || filepath.Dir(path) == "." {
			return nil
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		allowed, ok := rulesFor(pkg)
		if !ok {
			t.Errorf("%s: package %s has no dependency rule in deps_test.go", path, pkg)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p != module && !strings.HasPrefix(p, module+"/") {
				continue
			}
			target := strings.TrimPrefix(p, module+"/")
			if !allows(pkg, allowed, target) {
				t.Errorf("%s imports %s: against the dependency direction of design.md", path, p)
			}
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no Go files checked")
	}
}

// ruleKey returns the most specific rule that holds pkg (engine/record
// before engine), and whether there is one.
func ruleKey(pkg string) (string, bool) {
	best, found := "", false
	for key := range allowedImports {
		if (pkg == key || strings.HasPrefix(pkg, key+"/")) && len(key) >= len(best) {
			best, found = key, true
		}
	}
	return best, found
}

// rulesFor returns the rule of the most specific package tree holding pkg.
func rulesFor(pkg string) ([]string, bool) {
	key, ok := ruleKey(pkg)
	return allowedImports[key], ok
}

func allows(pkg string, allowed []string, target string) bool {
	top, _ := ruleKey(pkg)
	if target == top || strings.HasPrefix(target, top+"/") {
		if key, _ := ruleKey(target); key == top {
			return true // within the same package tree (not into a stricter subtree rule's package)
		}
	}
	for _, a := range allowed {
		if target == a || strings.HasPrefix(target, a+"/") {
			return true
		}
	}
	return false
}
