package logstore

import (
	"bytes"
	"fmt"
	"testing"

	"keel/ring"
)

// backendKinds lists the I/O backends this machine can run.
func backendKinds(t testing.TB) []ring.Kind {
	kinds := []ring.Kind{ring.KindSyscall}
	if err := ring.UringAvailable(); err == nil {
		kinds = append(kinds, ring.KindUring)
	} else {
		t.Logf("io_uring unavailable: %v", err)
	}
	return kinds
}

func openBackend(t testing.TB, kind ring.Kind) ring.Backend {
	t.Helper()
	b, err := ring.OpenKind(kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func mustOpen(t testing.TB, dir string, io ring.Backend, cfg LogConfig) *Log {
	t.Helper()
	l, err := OpenLog(dir, io, cfg)
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	return l
}

// payloadFor is a deterministic, offset-specific payload of varying size.
func payloadFor(off uint64) []byte {
	n := int(off*37%200) + 1
	return bytes.Repeat([]byte(fmt.Sprintf("%d.", off)), n)[:n+int(off%5)]
}

func messageRecord(off uint64) Record { return Record{Type: RecordMessage, Payload: payloadFor(off)} }

// readAll reads [from, NextOffset) and checks offsets are consecutive.
func readAll(t testing.TB, l *Log, from uint64) map[uint64][]byte {
	t.Helper()
	got := map[uint64][]byte{}
	want := max(from, l.StartOffset()) // reads below the start begin at it
	for {
		next, err := l.Read(from, 1<<16, func(fr Frame) bool {
			if fr.Offset != want {
				t.Fatalf("read offset %d, want %d", fr.Offset, want)
			}
			want++
			got[fr.Offset] = append([]byte(nil), fr.Payload...)
			return true
		})
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if next == from {
			return got
		}
		from = next
	}
}
