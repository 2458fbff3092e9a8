package httpfront

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
)

// jsonDepthMax bounds nesting in request bodies: the API's bodies are flat
// objects, and a deep body is either a mistake or an attack on the parser.
const jsonDepthMax = 32

// jsonSpace is JSON's insignificant whitespace (RFC 8259, section 2).
const jsonSpace = " \t\n\r"

// decodeJSONObject decodes one JSON object from body into v: unknown fields
// are ignored, trailing bytes other than whitespace are an error, and the
// nesting depth is bounded before the decoder sees the body.
func decodeJSONObject(body []byte, v any) *apiError {
	// JSON's whitespace only: bytes.TrimSpace would also take \f, \v and
	// Unicode spaces, and accept bodies no JSON parser does (fuzzing found
	// "{}\f").
	trimmed := bytes.Trim(body, jsonSpace)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errBadRequest("invalid_json", "the body must be a JSON object")
	}
	if jsonDepth(trimmed) > jsonDepthMax {
		return errBadRequest("invalid_json", "the JSON body nests deeper than 32 levels")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errBadRequest("invalid_json", "the body is not valid JSON of the expected shape: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errBadRequest("invalid_json", "unexpected data after the JSON object")
	}
	return nil
}

// jsonDepth returns the deepest nesting of objects and arrays in b,
// skipping string contents.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// jsonUint reads a JSON field as a non-negative 64-bit integer. Only a
// JSON number is accepted: a quoted "8", 1.5, -1 or 2^64 is not.
func jsonUint(raw json.RawMessage) (uint64, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(raw), 10, 64)
	return v, err == nil
}
