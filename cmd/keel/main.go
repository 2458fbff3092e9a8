package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"keel/engine"
	"keel/ring"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "keel:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("keel", flag.ContinueOnError)
	data := fs.String("data", envOr("KEEL_DATA", "./data"), "data directory (env KEEL_DATA)")
	port := fs.Int("port", 1109, "HTTP port (env KEEL_PORT); the HTTP server is not built yet")
	if err := fs.Parse(args); err != nil {
		return err
	}
	io, err := ring.Open()
	if err != nil {
		return err
	}
	defer io.Close()
	dir := filepath.Join(*data, "log")
	l, err := engine.OpenLog(dir, io, engine.LogConfig{})
	if err != nil {
		return err
	}
	defer l.Close()
	r := l.Recovery()
	fmt.Printf("keel: storage ready in %s (io backend %s): offsets [%d, %d), %d segments, %d torn bytes cut\n",
		dir, io.Kind(), l.StartOffset(), l.NextOffset(), r.Segments, r.CutBytes)
	fmt.Printf("keel: the HTTP API on port %d is not built yet (see the broker issue); exiting\n", *port)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
