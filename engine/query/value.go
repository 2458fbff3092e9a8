package query

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"
)

// Kind is the JSON type of a Value.
type Kind uint8

// The kinds a field's value can have. A field that is absent has no
// Value at all (lookups answer ok=false), which is not KindNull.
const (
	KindNull Kind = iota + 1
	KindBool
	KindNumber
	KindString
	KindObject
	KindArray
)

// Value is one field's value as a query sees it, whatever the encoding it
// was decoded from.
//
//   - KindNumber: Num, and Text holds the number's literal (so a 64-bit
//     integer keeps every digit in a group key);
//   - KindString: Text holds the string's bytes (unescaped);
//   - KindBool: Num is 1 or 0;
//   - KindObject, KindArray: Text holds the value as JSON.
//
// Text may point into a decoder's buffers: it is valid until the decoder
// decodes the next message.
type Value struct {
	Kind Kind
	Num  float64
	Text []byte
}

// Number returns the value as a number: numbers, and strings that parse
// as one ("numeric strings count as numbers", api.md "Stream queries").
func (v Value) Number() (float64, bool) {
	switch v.Kind {
	case KindNumber:
		return v.Num, !math.IsNaN(v.Num)
	case KindString:
		return parseNumber(v.Text)
	}
	return 0, false
}

// parseNumber parses b as a decimal or JSON number; "NaN", "Inf" and
// hexadecimal forms do not count.
func parseNumber(b []byte) (float64, bool) {
	if len(b) == 0 || len(b) > 64 {
		return 0, false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(b), 64)
	return f, err == nil
}

// AppendText appends the value as a query stringifies it (a group key, a
// join key, a string comparison): a string's bytes, a number in its
// shortest form (1, 1.0 and 1e0 are all "1", whichever encoding carried
// it; an integer beyond 2^53 keeps its literal, every digit), true/false,
// null, or the JSON of an object or array.
func (v Value) AppendText(dst []byte) []byte {
	switch v.Kind {
	case KindNumber:
		if plainInteger(v.Text) || len(v.Text) > 0 && !(math.Abs(v.Num) < 1<<53) {
			return append(dst, v.Text...)
		}
		return appendNumber(dst, v.Num)
	case KindNull:
		return append(dst, "null"...)
	case KindBool:
		if v.Num != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	}
	return append(dst, v.Text...)
}

// plainInteger reports whether b is an integer literal already in its
// shortest form (no sign but '-', no leading zero, at most 15 digits).
func plainInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 15 || len(b) > 1 && b[0] == '0' {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// AppendJSON appends the value as JSON.
func (v Value) AppendJSON(dst []byte) []byte {
	switch v.Kind {
	case KindString:
		return appendJSONString(dst, v.Text)
	case KindNumber:
		if len(v.Text) == 0 {
			return appendNumber(dst, v.Num)
		}
		return append(dst, v.Text...)
	case KindObject, KindArray:
		return append(dst, v.Text...)
	}
	return v.AppendText(dst)
}

// numberValue returns f as a Value with its shortest literal in buf.
func numberValue(buf []byte, f float64) Value {
	return Value{Kind: KindNumber, Num: f, Text: appendNumber(buf, f)}
}

// appendNumber appends f as a JSON number: integers without a fraction
// or exponent up to 1e21 (as JavaScript prints them), NaN and the
// infinities, which JSON cannot carry, as null.
func appendNumber(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return append(dst, "null"...)
	case math.Abs(f) < 1e21:
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// textEqual reports whether v stringifies to t.
func (v Value) textEqual(t []byte) bool {
	switch v.Kind {
	case KindNumber:
		var buf [32]byte
		return bytes.Equal(v.AppendText(buf[:0]), t)
	case KindNull:
		return string(t) == "null"
	case KindBool:
		if v.Num != 0 {
			return string(t) == "true"
		}
		return string(t) == "false"
	}
	return bytes.Equal(v.Text, t)
}

// textCompare compares v's text with t (bytewise, so UTF-8 strings order
// by code point).
func (v Value) textCompare(t []byte) int {
	switch v.Kind {
	case KindNull, KindBool, KindNumber:
		var buf [32]byte
		return bytes.Compare(v.AppendText(buf[:0]), t)
	}
	return bytes.Compare(v.Text, t)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, so the answer is always valid JSON.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
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
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
