package main

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// A configuration file (--config keel.toml, or KEEL_CONFIG) holds any
// flag of keel serve under its flag name:
//
//	port = 1109
//	data = "/var/lib/keel"
//	write-timeout = "30s"
//	tokens = ["reader@read", "ops@admin"]   # or one comma-separated string
//
// Precedence, highest first: a command-line flag, an environment variable
// (KEEL_<NAME> or an older alias), the file, the default. keel serve
// --print-config prints every effective value and where it came from, as
// TOML that can serve as a config file. BurntSushi/toml parses it: the
// reference Go implementation of TOML 1.0, with no dependencies of its own.

// Setting sources, as --print-config names them.
const (
	sourceDefault = "default"
	sourceFile    = "file"
	sourceFlag    = "flag"
)

// configSources records where each flag's value came from: a source
// constant, or "env NAME".
type configSources map[string]string

// configPath finds --config (or -config) in args, else KEEL_CONFIG.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	_, v, _ := lookupEnv([]string{"KEEL_CONFIG"})
	return v
}

// applyConfigFile sets every flag the file at path names, unless an
// environment variable set it already (env wins over the file; flags,
// parsed later, win over both).
func applyConfigFile(fs *flag.FlagSet, r io.Reader, path string, src configSources) error {
	var file map[string]any
	if _, err := toml.NewDecoder(r).Decode(&file); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "print-config" {
			return fmt.Errorf("config file %s: unknown setting %q (the settings are keel serve's flags, see keel serve --help)", path, k)
		}
		v, err := configValue(file[k])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
		if strings.HasPrefix(src[k], "env ") {
			continue
		}
		if err := f.Value.Set(v); err != nil {
			return fmt.Errorf("config file %s: %s = %q: %w", path, k, v, err)
		}
		src[k] = sourceFile
	}
	return nil
}

// configValue turns a TOML value into the flag's text form: strings as
// they are, numbers and booleans printed, a list of strings joined with
// commas (tokens, trusted proxies).
func configValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("a list holds strings only")
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or list of strings, got %T", v)
}

// secretSettings are printed redacted by --print-config.
var secretSettings = map[string]bool{"tokens": true}

// printConfig writes every flag's effective value as TOML, each with its
// source as a comment, sorted by name.
func printConfig(w io.Writer, fs *flag.FlagSet, src configSources) {
	fmt.Fprintln(w, "# keel serve: effective settings (precedence: flag > env > file > default)")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "print-config" {
			return
		}
		source := src[f.Name]
		if source == "" {
			source = sourceDefault
		}
		var val string
		switch v := f.Value.(flag.Getter).Get().(type) {
		case string:
			if secretSettings[f.Name] && v != "" {
				v = "<redacted>"
			}
			val = strconv.Quote(v)
		case time.Duration:
			val = strconv.Quote(v.String())
		case float64:
			val = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			val = fmt.Sprint(v)
		}
		fmt.Fprintf(w, "%s = %s # %s\n", f.Name, val, source)
	})
}
