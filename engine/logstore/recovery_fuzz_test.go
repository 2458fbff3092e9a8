package logstore

import (
	"errors"
	"testing"

	"keel/engine/record"
)

// FuzzScanSegment feeds arbitrary segment bytes to recovery's scan: it never
// panics, refuses only with a CorruptionError, and what it keeps is a run of
// valid frames with dense offsets that ends exactly where it says.
func FuzzScanSegment(f *testing.F) {
	var seg []byte
	for i := uint64(0); i < 4; i++ {
		seg = record.AppendFrame(seg, Frame{Type: RecordMessage, Flags: uint8(i % 2), Batch: uint32(i / 2), Offset: 10 + i, Payload: payloadFor(i)})
	}
	f.Add(seg, int64(0))
	f.Add(seg[:len(seg)-5], int64(40))
	f.Add(append(append([]byte{}, seg...), make([]byte, 64)...), int64(len(seg)))
	f.Fuzz(func(t *testing.T, data []byte, vouched int64) {
		res, err := scanSegment("fuzz", data, 10, vouched, 64, vouched%2 == 0)
		if err != nil {
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("scan failed with %v, want a CorruptionError", err)
			}
			return
		}
		if res.size > int64(len(data)) || res.size+res.cutBytes != int64(len(data)) && res.cut {
			t.Fatalf("kept %d + cut %d bytes of %d", res.size, res.cutBytes, len(data))
		}
		if res.size < vouched {
			t.Fatalf("kept %d bytes, below the %d vouched", res.size, vouched)
		}
		pos, want := int64(0), uint64(10)
		for pos < res.size {
			fr, n, err := record.DecodeFrame(data[pos:])
			if err != nil || fr.Offset != want {
				t.Fatalf("kept bytes at %d do not decode as offset %d: %v", pos, want, err)
			}
			pos += int64(n)
			want++
		}
		if pos != res.size || want-10 != res.count {
			t.Fatalf("kept %d records in %d bytes, re-decoded %d in %d", res.count, res.size, want-10, pos)
		}
	})
}
