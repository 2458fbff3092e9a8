package record

import (
	"encoding/binary"
	"errors"
)

// A partition message is stored as the payload of a TypeMessage frame:
//
//	+----------------+----------+---------//--+----------//---+
//	| timestamp_ms   | key len  |    key      |    value      |
//	+----------------+----------+---------//--+----------//---+
//	    i64 LE          u32 LE
//
// An empty key means "no key". The offset lives in the frame header.
const messageHeaderBytes = 12

// Message is one partition record. Key and Value alias the buffer they were
// decoded from.
type Message struct {
	Offset      uint64
	TimestampMs int64
	Key         []byte
	Value       []byte
}

var ErrMessageShort = errors.New("message: payload shorter than its header")

// AppendMessage appends the payload encoding of a message to dst.
func AppendMessage(dst []byte, timestampMs int64, key, value []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(timestampMs))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(key)))
	dst = append(dst, key...)
	return append(dst, value...)
}

// MessagePayloadBytes is the payload size of a message with this key and value.
func MessagePayloadBytes(key, value []byte) int { return messageHeaderBytes + len(key) + len(value) }

// MessageTimestamp reads the timestamp of a TypeMessage frame's payload
// without decoding the rest.
func MessageTimestamp(payload []byte) (int64, bool) {
	if len(payload) < messageHeaderBytes {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(payload[0:8])), true
}

// DecodeMessage decodes a TypeMessage frame's payload.
func DecodeMessage(offset uint64, payload []byte) (Message, error) {
	if len(payload) < messageHeaderBytes {
		return Message{}, ErrMessageShort
	}
	keyLen := binary.LittleEndian.Uint32(payload[8:12])
	if uint64(keyLen) > uint64(len(payload)-messageHeaderBytes) {
		return Message{}, ErrMessageShort
	}
	end := messageHeaderBytes + int(keyLen)
	return Message{
		Offset:      offset,
		TimestampMs: int64(binary.LittleEndian.Uint64(payload[0:8])),
		Key:         payload[messageHeaderBytes:end],
		Value:       payload[end:],
	}, nil
}
