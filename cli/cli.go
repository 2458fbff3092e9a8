// Package cli is keel's command line for people and scripts: produce,
// consume, topics, groups, kv, cluster and ready. It talks to a node over
// HTTP only, as any client does (curl stays a complete client): --url (or
// KEEL_URL, default http://127.0.0.1:1109) and --token (or KEEL_TOKEN,
// default "dev"), following a follower's redirect to the leader with the
// token kept.
//
// Output is a table or plain lines for people, and the server's JSON with
// --json for scripts. Exit codes: 0 done; 1 the server refused (its error
// code and message on stderr); 2 a usage error; 3 the node could not be
// reached.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitRefused     = 1
	ExitUsage       = 2
	ExitUnreachable = 3
)

// DefaultURL is the node a command talks to without --url or KEEL_URL.
const DefaultURL = "http://127.0.0.1:1109"

// Commands lists the subcommands Run serves, with a line each for keel's
// usage.
var Commands = []struct{ Name, Summary string }{
	{"produce", "produce lines from stdin or --file to a topic"},
	{"consume", "read a topic (follow with long polls or Server-Sent Events)"},
	{"topics", "list, create, describe topics; delete-before; retention"},
	{"groups", "list and describe consumer groups (members, lag)"},
	{"kv", "get, put, del, list keys of the KV store"},
	{"cluster", "status, add, promote, remove cluster members"},
	{"ready", "exit 0 when the node serves (for health checks)"},
}

// Env is what a command reads and writes.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// OSEnv is the process's own streams and environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Run runs subcommand cmd with args and returns the exit code.
func Run(cmd string, args []string, env Env) int {
	c := &command{env: env}
	var fn func(*command, []string) int
	switch cmd {
	case "produce":
		fn = runProduce
	case "consume":
		fn = runConsume
	case "topics":
		fn = runTopics
	case "groups":
		fn = runGroups
	case "kv":
		fn = runKV
	case "cluster":
		fn = runCluster
	case "ready":
		fn = runReady
	default:
		fmt.Fprintf(env.Stderr, "keel: unknown command %q\n", cmd)
		return ExitUsage
	}
	return fn(c, args)
}

// command holds what every subcommand shares: the flags, the client.
type command struct {
	env   Env
	url   string
	token string
	json  bool
	http  *http.Client
	pos   []string // the positional arguments
}

// flags returns a flag set with the common flags (--url, --token,
// --json), its usage text built from usage and examples.
func (c *command) flags(name, usage, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet("keel "+name, flag.ContinueOnError)
	fs.SetOutput(c.env.Stderr)
	def := c.env.Getenv("KEEL_URL")
	if def == "" {
		def = DefaultURL
	}
	tok := c.env.Getenv("KEEL_TOKEN")
	if tok == "" {
		tok = "dev"
	}
	fs.StringVar(&c.url, "url", def, "the node (env KEEL_URL); a follower's redirect to the leader is followed")
	fs.StringVar(&c.token, "token", tok, "bearer token (env KEEL_TOKEN)")
	fs.BoolVar(&c.json, "json", false, "print the server's JSON answers (for scripts)")
	fs.Usage = func() {
		fmt.Fprintf(c.env.Stderr, "usage: keel %s %s\n\n", name, usage)
		fs.PrintDefaults()
		if examples != "" {
			fmt.Fprintf(c.env.Stderr, "\nexamples:\n%s", examples)
		}
	}
	return fs
}

// parse parses args; it returns an exit code when the command must stop
// (help, a bad flag).
func (c *command) parse(fs *flag.FlagSet, args []string) (int, bool) {
	// Flags may come after the positional arguments (keel topics create
	// events --partitions 4), which the flag package alone stops at.
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ExitOK, false
			}
			return ExitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			c.pos = append(c.pos, rest...) // after "--" everything is positional
			break
		}
		c.pos = append(c.pos, rest[0])
		args = rest[1:]
	}
	c.url = strings.TrimRight(c.url, "/")
	if u, err := url.Parse(c.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(c.env.Stderr, "keel: --url %q: want http://host:port\n", c.url)
		return ExitUsage, false
	}
	token := c.token
	c.http = &http.Client{
		Timeout: 0, // long polls and streams; each request sets its own deadline
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			// The leader is another host or port: keep the token (Go drops
			// Authorization on a redirect to another host).
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		},
	}
	return 0, true
}

// usageError prints msg and the command's usage.
func (c *command) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(c.env.Stderr, "keel: "+format+"\n\n", args...)
	fs.Usage()
	return ExitUsage
}

// apiError is a refusal from the server.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
}

// unreachable wraps a transport failure.
type unreachable struct{ err error }

func (e *unreachable) Error() string { return "cannot reach the node: " + e.err.Error() }

// do sends one request and returns the answer's body for a 2xx; a JSON
// error answer becomes an *apiError, a transport failure an *unreachable.
func (c *command) do(method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	return c.doCtx(context.Background(), method, path, body, timeout)
}

// doCtx is do, ended early when ctx is.
func (c *command) doCtx(ctx context.Context, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &unreachable{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &unreachable{err}
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Message string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error, e.Message = "http_"+fmt.Sprint(resp.StatusCode), strings.TrimSpace(string(b))
		}
		return nil, &apiError{Status: resp.StatusCode, Code: e.Error, Message: e.Message}
	}
	return b, nil
}

// getJSON sends a request and decodes its JSON answer into v (and prints
// it raw with --json when print is set).
func (c *command) getJSON(method, path string, body []byte, v any) ([]byte, error) {
	b, err := c.do(method, path, body, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return b, fmt.Errorf("the answer is not the JSON expected: %w", err)
		}
	}
	return b, nil
}

// fail reports err and returns its exit code.
func (c *command) fail(err error) int {
	var ae *apiError
	var un *unreachable
	switch {
	case errors.As(err, &ae):
		fmt.Fprintf(c.env.Stderr, "keel: %s\n", ae.Error())
		return ExitRefused
	case errors.As(err, &un):
		fmt.Fprintf(c.env.Stderr, "keel: %v (--url %s)\n", un, c.url)
		return ExitUnreachable
	}
	fmt.Fprintf(c.env.Stderr, "keel: %v\n", err)
	return ExitRefused
}

// printRaw writes a JSON answer on its own line.
func (c *command) printRaw(b []byte) {
	c.env.Stdout.Write(bytes.TrimSpace(b))
	fmt.Fprintln(c.env.Stdout)
}

func runReady(c *command, args []string) int {
	fs := c.flags("ready", "[--url URL]", "  keel ready --url http://127.0.0.1:1109 && echo serving\n")
	if code, ok := c.parse(fs, args); !ok {
		return code
	}
	req, _ := http.NewRequest("GET", c.url+"/ready", nil)
	ctx, cancel := contextWithTimeout(3 * time.Second)
	defer cancel()
	resp, err := c.http.Do(req.WithContext(ctx))
	if err != nil {
		return c.fail(&unreachable{err})
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if c.json {
		c.printRaw(b)
	}
	if resp.StatusCode != 200 {
		if !c.json {
			fmt.Fprintf(c.env.Stderr, "keel: not ready: %s\n", strings.TrimSpace(string(b)))
		}
		return ExitRefused
	}
	if !c.json {
		fmt.Fprintln(c.env.Stdout, "ready")
	}
	return ExitOK
}
