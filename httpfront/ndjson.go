package httpfront

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// splitNDJSON calls fn for each non-empty line of body (a trailing "\r" is
// stripped). A line that is a JSON string literal yields its decoded
// string; any other line yields its bytes unchanged. fn gets a slice that
// may alias body. It stops at the first error fn returns.
func splitNDJSON(body []byte, fn func(line []byte) error) error {
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if err := fn(decodeStringLine(line)); err != nil {
			return err
		}
	}
	return nil
}

// decodeStringLine returns the decoded string when line is exactly one JSON
// string literal, else line itself.
func decodeStringLine(line []byte) []byte {
	if len(line) < 2 || line[0] != '"' || line[len(line)-1] != '"' || !utf8.Valid(line) {
		return line // not a JSON string literal (JSON text is valid UTF-8)
	}
	if bytes.IndexByte(line[1:len(line)-1], '\\') < 0 && bytes.IndexByte(line[1:len(line)-1], '"') < 0 && validUTF8NoControl(line[1:len(line)-1]) {
		return line[1 : len(line)-1] // no escapes: the common case, no allocation
	}
	var s string
	if err := json.Unmarshal(line, &s); err != nil {
		return line
	}
	return []byte(s)
}

// validUTF8NoControl reports whether b could appear unescaped inside a JSON
// string: valid UTF-8 and no control characters.
func validUTF8NoControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return false
		}
	}
	return utf8.Valid(b)
}
