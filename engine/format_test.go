package engine

import (
	"bytes"
	"errors"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	cases := []Frame{
		{Type: RecordMessage, Offset: 0, Batch: 1},
		{Type: RecordMessage, Flags: flagBatchEnd, Offset: 7, Batch: 9, Payload: []byte("x")},
		{Type: RecordRaftEntry, Offset: 1 << 40, Batch: 1<<32 - 1, Payload: bytes.Repeat([]byte{0xab}, 8)},
		{Type: recordDurableMark, Payload: bytes.Repeat([]byte("abcdefg"), 1000)},
	}
	for _, want := range cases {
		enc := AppendFrame([]byte("prefix"), want)[len("prefix"):]
		if len(enc)%frameAlign != 0 || len(enc) != frameBytes(len(want.Payload)) {
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
	valid := AppendFrame(nil, Frame{Type: RecordMessage, Offset: 3, Payload: []byte("hello")})
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errFrameShort},
		{"zeros", make([]byte, 64), errFrameType},
		{"short header", valid[:10], errFrameShort},
		{"short body", valid[:frameHeaderBytes+2], errFrameShort},
		{"length over max", mutate(func(b []byte) []byte { b[3] = 0xff; return b }), errFrameLength},
		{"type zero", mutate(func(b []byte) []byte { b[8] = 0; return b }), errFrameType},
		{"type unknown", mutate(func(b []byte) []byte { b[8] = 99; return b }), errFrameType},
		{"unknown flag", mutate(func(b []byte) []byte { b[9] = 0x80; return b }), errFrameReserved},
		{"reserved", mutate(func(b []byte) []byte { b[11] = 1; return b }), errFrameReserved},
		{"padding", mutate(func(b []byte) []byte { b[len(b)-1] = 1; return b }), errFramePadding},
		{"payload bit", mutate(func(b []byte) []byte { b[frameHeaderBytes] ^= 1; return b }), errFrameCRC},
		{"offset bit", mutate(func(b []byte) []byte { b[20] ^= 0x10; return b }), errFrameCRC},
		{"crc bit", mutate(func(b []byte) []byte { b[5] ^= 2; return b }), errFrameCRC},
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
	f.Add(AppendFrame(nil, Frame{Type: RecordMessage, Payload: []byte("seed")}))
	f.Add(AppendFrame(nil, Frame{Type: RecordRaftState, Flags: flagBatchEnd, Batch: 5, Offset: 77}))
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
