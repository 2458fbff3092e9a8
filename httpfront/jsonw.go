package httpfront

import (
	"strconv"
	"unicode/utf8"
)

// Responses are built by appending to a byte slice: compact JSON, no
// reflection on the hot path. These helpers are the only JSON encoder.

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal: quotes, backslash
// and control characters escaped, invalid UTF-8 replaced by U+FFFD, and
// <, >, &, U+2028, U+2029 escaped so the output is safe inside HTML too.
func appendJSONString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendJSONStr(dst []byte, s string) []byte { return appendJSONString(dst, []byte(s)) }

// appendKey appends "key": after a comma unless dst ends an opening brace.
func appendKey(dst []byte, key string) []byte {
	if n := len(dst); n > 0 && dst[n-1] != '{' && dst[n-1] != '[' {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

func appendUintField(dst []byte, key string, v uint64) []byte {
	return strconv.AppendUint(appendKey(dst, key), v, 10)
}

func appendIntField(dst []byte, key string, v int64) []byte {
	return strconv.AppendInt(appendKey(dst, key), v, 10)
}

func appendBoolField(dst []byte, key string, v bool) []byte {
	return strconv.AppendBool(appendKey(dst, key), v)
}

func appendStringField(dst []byte, key, v string) []byte {
	return appendJSONStr(appendKey(dst, key), v)
}

func appendNullField(dst []byte, key string) []byte {
	return append(appendKey(dst, key), "null"...)
}
