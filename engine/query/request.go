package query

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Error is a request the query engine refuses: Status is the HTTP status
// (400, 404, 413, 503), Code the API error code (httpfront/errors.md).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, format string, args ...any) *Error {
	return &Error{Status: 400, Code: code, Message: fmt.Sprintf(format, args...)}
}

func tooLarge(code, format string, args ...any) *Error {
	return &Error{Status: 413, Code: code, Message: fmt.Sprintf(format, args...)}
}

// SourceSpec is one partition to read, as api.md "Stream queries" gives
// it: explicit offset (negative: the log start), else the group's
// committed offset + 1, else the log start; limit messages at most.
type SourceSpec struct {
	Topic     string      `json:"topic"`
	Partition *int64      `json:"partition"`
	Group     string      `json:"group"`
	Offset    *int64      `json:"offset"`
	Limit     *int64      `json:"limit"`
	Decode    *DecodeSpec `json:"decode"`
	TimeField string      `json:"time_field"` // joins: event time instead of broker time
}

// DecodeSpec says how a source's message values are decoded.
type DecodeSpec struct {
	Type          string              `json:"type"`     // json (default), avro, proto
	Encoding      string              `json:"encoding"` // binary or json (avro, proto)
	SchemaText    string              `json:"schema_text"`
	Message       string              `json:"message"` // proto: the message type (default: the file's first)
	ApplyDefaults *bool               `json:"apply_defaults"`
	FieldAliases  map[string][]string `json:"field_aliases"`
}

// Condition is one filter term; a filter is the AND of its terms.
type Condition struct {
	Field string          `json:"field"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value"`
}

// Measure is one aggregate over a group.
type Measure struct {
	Op    string `json:"op"`
	Field string `json:"field"`
	As    string `json:"as"`
}

// AggregateSpec groups the filtered messages.
type AggregateSpec struct {
	GroupBy  []string  `json:"group_by"`
	Measures []Measure `json:"measures"`
}

// WindowSpec splits aggregates into tumbling windows.
type WindowSpec struct {
	Type      string `json:"type"`
	SizeMs    int64  `json:"size_ms"`
	TimeField string `json:"time_field"`
}

// TransformSpec shapes the rows returned.
type TransformSpec struct {
	LeftFields []string `json:"left_fields"`
	EmitRows   int64    `json:"emit_rows"`
}

// QueryRequest is the body of POST /broker/query.
type QueryRequest struct {
	Source    *SourceSpec    `json:"source"`
	Filter    []Condition    `json:"filter"`
	Aggregate *AggregateSpec `json:"aggregate"`
	Window    *WindowSpec    `json:"window"`
	Transform *TransformSpec `json:"transform"`
}

// JoinRequest is the body of POST /broker/join.
type JoinRequest struct {
	Left  *SourceSpec `json:"left"`
	Right *SourceSpec `json:"right"`
	On    struct {
		LeftKey   string   `json:"left_key"`
		RightKey  string   `json:"right_key"`
		LeftKeys  []string `json:"left_keys"`
		RightKeys []string `json:"right_keys"`
	} `json:"on"`
	Window struct {
		SizeMs            *int64 `json:"size_ms"`
		AllowedLatenessMs int64  `json:"allowed_lateness_ms"`
	} `json:"window"`
	Join struct {
		Type string `json:"type"`
	} `json:"join"`
	DedupeOnce bool `json:"dedupe_once"`
	Dedupe     struct {
		Mode string `json:"mode"`
	} `json:"dedupe"`
	Emit struct {
		LeftFields  []string `json:"left_fields"`
		RightFields []string `json:"right_fields"`
		MaxRows     *int64   `json:"max_rows"`
		MissingAs   string   `json:"missing_as"`
	} `json:"emit"`
}

// FieldNameBytesMax bounds a field name (and each part of a dotted path).
const FieldNameBytesMax = 256

// FieldsMax bounds how many field names one request may use (filter
// terms, group_by, measures, projections, keys together).
const FieldsMax = 256

// decodeBody parses body into v: 400 invalid_json when it is not a JSON
// object of the request's shape, with encoding/json's account of where.
func decodeBody(body []byte, v any) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("invalid_json", "the body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid_json", "the body is not a JSON request of this route's shape: %v", err)
	}
	if dec.More() {
		return badRequest("invalid_json", "the body holds more than one JSON value")
	}
	return nil
}

// checkField validates a field name a request uses.
func checkField(what, name string) *Error {
	switch {
	case name == "":
		return badRequest("invalid_field", "%s needs a field name", what)
	case len(name) > FieldNameBytesMax:
		return badRequest("invalid_field", "%s: a field name is at most %d bytes", what, FieldNameBytesMax)
	case strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, ".."):
		return badRequest("invalid_field", "%s: %q has an empty part in its dotted path", what, name)
	}
	return nil
}
