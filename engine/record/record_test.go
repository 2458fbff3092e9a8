package record

import (
	"bytes"
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	cases := []Frame{
		{Type: TypeMessage, Offset: 0, Batch: 1},
		{Type: TypeMessage, Flags: FlagBatchEnd, Offset: 7, Batch: 9, Payload: []byte("x")},
		{Type: TypeRaftEntry, Offset: 1 << 40, Batch: 1<<32 - 1, Payload: bytes.Repeat([]byte{0xab}, 8)},
		{Type: TypeDurableMark, Payload: bytes.Repeat([]byte("abcdefg"), 1000)},
	}
	for _, want := range cases {
		enc := AppendFrame([]byte("prefix"), want)[len("prefix"):]
		if len(enc)%Align != 0 || len(enc) != FrameBytes(len(want.Payload)) {
			t.Fatalf("encoded size %d for payload %d: not the aligned frame size", len(enc), len(want.Payload))
		}
		got, size, err := DecodeFrame(append(enc, 0xff, 0xff)) // trailing bytes are not part of it
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		if size != len(enc) || got.Type != want.Type || got.Flags != want.Flags || got.Batch != want.Batch ||
			got.Offset != want.Offset || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("round trip: got %+v (size %d), want %+v (size %d)", got, size, want, len(enc))
		}
	}
}

func TestFrameRejects(t *testing.T) {
	valid := AppendFrame(nil, Frame{Type: TypeMessage, Offset: 3, Payload: []byte("hello")})
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"zeros", make([]byte, 64), ErrType},
		{"short header", valid[:10], ErrShort},
		{"short body", valid[:HeaderBytes+2], ErrShort},
		{"length over max", mutate(func(b []byte) []byte { b[3] = 0xff; return b }), ErrLength},
		{"type zero", mutate(func(b []byte) []byte { b[8] = 0; return b }), ErrType},
		{"type unknown", mutate(func(b []byte) []byte { b[8] = 99; return b }), ErrType},
		{"unknown flag", mutate(func(b []byte) []byte { b[9] = 0x80; return b }), ErrReserved},
		{"reserved", mutate(func(b []byte) []byte { b[11] = 1; return b }), ErrReserved},
		{"padding", mutate(func(b []byte) []byte { b[len(b)-1] = 1; return b }), ErrPadding},
		{"payload bit", mutate(func(b []byte) []byte { b[HeaderBytes] ^= 1; return b }), ErrCRC},
		{"offset bit", mutate(func(b []byte) []byte { b[20] ^= 0x10; return b }), ErrCRC},
		{"crc bit", mutate(func(b []byte) []byte { b[5] ^= 2; return b }), ErrCRC},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := DecodeFrame(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzDecodeRecord checks that decoding never panics, that whatever decodes
// re-encodes to the same bytes, and that flipping any single byte of an
// accepted frame makes it rejected.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(AppendFrame(nil, Frame{Type: TypeMessage, Payload: []byte("seed")}))
	f.Add(AppendFrame(nil, Frame{Type: TypeRaftState, Flags: FlagBatchEnd, Batch: 5, Offset: 77}))
	f.Add(make([]byte, 32))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, size, err := DecodeFrame(b)
		if err != nil {
			return
		}
		enc := AppendFrame(nil, fr)
		if !bytes.Equal(enc, b[:size]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, b[:size])
		}
		for i := 0; i < size; i++ {
			flipped := append([]byte(nil), b[:size]...)
			flipped[i] ^= 0x5a
			if _, _, err := DecodeFrame(flipped); err == nil {
				t.Fatalf("flipping byte %d of an accepted frame was accepted", i)
			}
		}
	})
}

// TestMessageRoundTrip: a message payload decodes to what was encoded, and
// a payload shorter than its header or its key is refused.
func TestMessageRoundTrip(t *testing.T) {
	for _, c := range []struct{ key, value string }{{"", ""}, {"k", "v"}, {"", "no key"}, {"key only", ""}} {
		p := AppendMessage(nil, 1_700_000_000_123, []byte(c.key), []byte(c.value))
		if len(p) != MessagePayloadBytes([]byte(c.key), []byte(c.value)) {
			t.Fatalf("%q/%q: %d bytes, MessagePayloadBytes says %d", c.key, c.value, len(p), MessagePayloadBytes([]byte(c.key), []byte(c.value)))
		}
		m, err := DecodeMessage(42, p)
		if err != nil || m.Offset != 42 || m.TimestampMs != 1_700_000_000_123 || string(m.Key) != c.key || string(m.Value) != c.value {
			t.Fatalf("%q/%q: %+v %v", c.key, c.value, m, err)
		}
	}
	good := AppendMessage(nil, 1, []byte("key"), []byte("v"))
	for _, bad := range [][]byte{nil, good[:11], good[:13]} {
		if _, err := DecodeMessage(0, bad); !errors.Is(err, ErrMessageShort) {
			t.Fatalf("%x: %v, want ErrMessageShort", bad, err)
		}
	}
}

// FuzzDecodeMessage: any payload either decodes into parts that re-encode
// to it, or is refused; never a panic.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendMessage(nil, 5, []byte("k"), []byte("v")))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := DecodeMessage(0, p)
		if err != nil {
			return
		}
		if got := AppendMessage(nil, m.TimestampMs, m.Key, m.Value); !bytes.Equal(got, p) {
			t.Fatalf("re-encoded %x, decoded from %x", got, p)
		}
	})
}
