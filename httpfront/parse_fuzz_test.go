package httpfront

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"keel/engine"
)

func TestSplitNDJSON(t *testing.T) {
	cases := []struct {
		body string
		want []string
	}{
		{"a\nb\n", []string{"a", "b"}},
		{"a\r\nb", []string{"a", "b"}},
		{"\n\n\r\n", nil},
		{`"alpha"` + "\n" + `"tab\tq\"uote"` + "\n", []string{"alpha", "tab\tq\"uote"}},
		{`"unterminated` + "\n" + `"a" "b"`, []string{`"unterminated`, `"a" "b"`}},
		{`{"json":1}`, []string{`{"json":1}`}},
		{"  \n", []string{"  "}},
		{`"\u00e9"`, []string{"é"}},
		{`""`, []string{""}},
	}
	for _, tc := range cases {
		var got []string
		if err := splitNDJSON([]byte(tc.body), func(l []byte) error { got = append(got, string(l)); return nil }); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("splitNDJSON(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// FuzzSplitNDJSON: never panics; yields at most one message per line; a
// yielded message is either a raw line (no newline, no trailing CR) or the
// decoding of a line that is exactly one JSON string literal.
func FuzzSplitNDJSON(f *testing.F) {
	f.Add([]byte("a\nb\r\n\"c\"\n"))
	f.Add([]byte(`"\ud83d\ude00"` + "\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		lines := bytes.Split(body, []byte{'\n'})
		n := 0
		err := splitNDJSON(body, func(msg []byte) error {
			n++
			raw := bytes.TrimSuffix(lines[0], []byte{'\r'})
			for len(raw) == 0 {
				lines = lines[1:]
				raw = bytes.TrimSuffix(lines[0], []byte{'\r'})
			}
			lines = lines[1:]
			var s string
			// Only an exact literal is decoded: surrounding spaces keep the
			// line raw.
			if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && utf8.Valid(raw) && json.Unmarshal(raw, &s) == nil {
				if string(msg) != s {
					t.Fatalf("line %q decoded to %q, want %q", raw, msg, s)
				}
			} else if !bytes.Equal(msg, raw) {
				t.Fatalf("raw line %q yielded %q", raw, msg)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > bytes.Count(body, []byte{'\n'})+1 {
			t.Fatalf("%d messages from %d lines", n, bytes.Count(body, []byte{'\n'})+1)
		}
	})
}

// FuzzCommitBody: the JSON body parser never panics, and what it accepts
// is valid JSON whose numbers are non-negative integers.
func FuzzCommitBody(f *testing.F) {
	f.Add([]byte(`{"topic":"t","group":"g","partition":0,"offset":5}`))
	f.Add([]byte(`{"topic":"t","partition":"0"} x`))
	f.Add([]byte(`{"a":[[[[{}]]]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req struct {
			Topic     *string         `json:"topic"`
			Partition json.RawMessage `json:"partition"`
			Offset    json.RawMessage `json:"offset"`
		}
		if e := decodeJSONObject(body, &req); e != nil {
			if e.status != 400 || e.code != "invalid_json" {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if v, ok := jsonUint(req.Offset); ok && string(req.Offset) != strings.TrimLeft(string(req.Offset), "-") {
			t.Fatalf("accepted negative offset %q as %d", req.Offset, v)
		}
	})
}

// FuzzConsumeQuery: query parsing never panics, and accepted values are
// inside their limits.
func FuzzConsumeQuery(f *testing.F) {
	f.Add("offset=5&limit=10&max_bytes=100&wait_ms=20&encoding=b64")
	f.Add("limit=-1")
	f.Add("offset=%zz&limit=99999999999999999999")
	s := &Server{cfg: Defaults()}
	f.Fuzz(func(t *testing.T, query string) {
		var args fasthttp.Args
		args.Parse(query)
		q, e := s.parseConsumeQuery(&args)
		if e != nil {
			if e.status != 400 || !strings.HasPrefix(e.code, "invalid_") {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if q.limit < 1 || q.limit > s.cfg.ConsumeLimitMax || q.maxBytes < 1 || q.maxBytes > s.cfg.MaxBytesMax ||
			q.wait < 0 || q.wait > s.cfg.WaitMax {
			t.Fatalf("out of limits: %+v from %q", q, query)
		}
	})
}

// FuzzJSONString: the response string encoder always produces a JSON
// string that decodes to the input (with invalid UTF-8 replaced).
func FuzzJSONString(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add([]byte("\x00\"\\\n\u2028<>&\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		enc := appendJSONString(nil, in)
		var out string
		if err := json.Unmarshal(enc, &out); err != nil {
			t.Fatalf("%q encoded to invalid JSON %q: %v", in, enc, err)
		}
		want := strings.Builder{}
		for i := 0; i < len(in); {
			r, size := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && size == 1 {
				want.WriteRune(utf8.RuneError)
			} else {
				want.Write(in[i : i+size])
			}
			i += size
		}
		if out != want.String() {
			t.Fatalf("%q round-tripped to %q", in, out)
		}
	})
}

func TestDecodeJSONObjectWhitespace(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{"{}", true},
		{" \t\r\n{}\n", true},
		{"{}\f", false},
		{"\v{}", false},
		{"{}\u00a0", false},
		{"{} x", false},
		{"[]", false},
	} {
		var v struct{}
		if e := decodeJSONObject([]byte(tc.body), &v); (e == nil) != tc.ok {
			t.Errorf("decodeJSONObject(%q): error %v, want ok=%v", tc.body, e, tc.ok)
		}
	}
}

// FuzzClassifyNumber: a parameter's number is classified exactly as an
// arbitrary-precision parse does: invalid, negative, fits int64 (with its
// value), or huge.
func FuzzClassifyNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "+5", "-1", "9223372036854775807", "9223372036854775808", "-99999999999999999999", "", "-", "1e3", "0x10", " 1", "007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, k := classifyNumber([]byte(s))
		n, ok := new(big.Int).SetString(s, 10)
		if ok && (strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0b") || strings.HasPrefix(s, "0o") || strings.Contains(s, "_")) {
			ok = false // big accepts prefixes and underscores with base 0 only, but be safe
		}
		switch {
		case !ok:
			if k != numberInvalid {
				t.Fatalf("%q: kind %d, want invalid", s, k)
			}
		case n.Sign() < 0:
			if k != numberNegative {
				t.Fatalf("%q: kind %d, want negative", s, k)
			}
		case n.IsInt64():
			if k != numberFits || v != n.Int64() {
				t.Fatalf("%q: kind %d value %d, want fits %d", s, k, v, n.Int64())
			}
		default:
			if k != numberHuge {
				t.Fatalf("%q: kind %d, want huge", s, k)
			}
		}
	})
}

// FuzzParseTokens: the token list parser never panics, and what it
// accepts has a secret, a known scope and sane limits.
func FuzzParseTokens(f *testing.F) {
	for _, s := range []string{"a", "a@read,b@write", "dev@55555555555555:11111111111111111:111111111111111111111", "a@1:2:3", "a@write@1:1:0", "@", "a@", "a@1:2", "a@-1:1:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks, err := ParseTokens(s)
		if err != nil {
			return
		}
		for _, tk := range toks {
			if tk.Secret == "" || tk.Scope < ScopeRead || tk.Scope > ScopeAdmin {
				t.Fatalf("%q: bad token %+v", s, tk)
			}
			if l := tk.Limit; l != nil && (l.RPS < 0 || l.Burst < 0 || l.Daily < 0 || l.RPS == 0 && l.Daily == 0 || l.RPS > 0 && l.Burst < 1) {
				t.Fatalf("%q: bad limit %+v", s, *l)
			}
		}
	})
}

// FuzzRetentionCommand: a retention body either parses into a command
// that encodes and decodes to itself, or is refused with a 400.
func FuzzRetentionCommand(f *testing.F) {
	f.Add([]byte(`{"topic":"t","partition":0,"ttl_ms":60000,"max_bytes":104857600}`))
	f.Add([]byte(`{"topic":"*","ttl_ms":0}`))
	f.Add([]byte(`{"topic":"t","max_bytes":18446744073709551615}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		cmd, e := retentionCommand(body)
		if e != nil {
			if e.status != 400 {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if cmd.TTLMs < -1 || cmd.MaxBytes < -1 || cmd.TTLMs < 0 && cmd.MaxBytes < 0 || cmd.Partition < -1 {
			t.Fatalf("command out of range: %+v", cmd)
		}
		var back engine.Command
		if _, err := engine.DecodeCommand(engine.AppendCommand(nil, cmd), &back, nil); err != nil {
			t.Fatalf("%+v does not decode: %v", cmd, err)
		}
		if back.Topic != cmd.Topic || back.Partition != cmd.Partition || back.TTLMs != cmd.TTLMs || back.MaxBytes != cmd.MaxBytes {
			t.Fatalf("round trip %+v -> %+v", cmd, back)
		}
	})
}

// FuzzKVPath: a namespace and key escaped into a path come back as they
// were, and any path either splits or is a 400.
func FuzzKVPath(f *testing.F) {
	f.Add("ns", "a/b/c")
	f.Add("ns", "x/meta")
	f.Add("n%zz", "%")
	f.Fuzz(func(t *testing.T, ns, key string) {
		if _, _, _, e := kvPath(ns + "/" + key); e != nil && e.status != 400 {
			t.Fatalf("error %+v", e)
		}
		if strings.Contains(ns, "/") || key == "" {
			return
		}
		// A client escapes each key segment; "/" stays the separator.
		parts := strings.Split(key, "/")
		for i := range parts {
			parts[i] = url.PathEscape(parts[i])
		}
		raw := strings.Join(parts, "/")
		if strings.HasSuffix(key, "/meta") {
			raw = strings.Join(parts[:len(parts)-1], "/") + "%2Fmeta"
		}
		gotNS, gotKey, meta, e := kvPath(url.PathEscape(ns) + "/" + raw)
		if e != nil || gotNS != ns || gotKey != key || meta {
			t.Fatalf("(%q, %q) -> %q: (%q, %q, meta %v, %v)", ns, key, raw, gotNS, gotKey, meta, e)
		}
	})
}

// FuzzGroupJoin: a join body either is a 4xx or becomes a command within
// the limits that survives its encoding.
func FuzzGroupJoin(f *testing.F) {
	f.Add([]byte(`{"topic":"ev","member_id":"a","session_timeout_ms":10000,"strategy":"sticky"}`))
	f.Add([]byte(`{"topic":"ev"}`))
	f.Add([]byte(`{"topic":"ev","session_timeout_ms":99,"strategy":"range"}`))
	f.Add([]byte(`{"topic":"ev","member_id":"\u0000","strategy":"roundrobin"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req struct {
			Topic    *string         `json:"topic"`
			MemberID *string         `json:"member_id"`
			Session  json.RawMessage `json:"session_timeout_ms"`
			Strategy *string         `json:"strategy"`
		}
		if e := decodeJSONObject(body, &req); e != nil {
			return
		}
		cmd, e := joinCommand("g", req.Topic, req.MemberID, req.Session, req.Strategy)
		if e != nil {
			if e.status != 400 {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if !engine.ValidTopicName(cmd.Topic) || !engine.ValidMemberID(cmd.MemberID) ||
			cmd.TTLMs < engine.SessionTimeoutMinMs || cmd.TTLMs > engine.SessionTimeoutMaxMs {
			t.Fatalf("accepted %+v", cmd)
		}
		var back engine.Command
		if _, err := engine.DecodeCommand(engine.AppendCommand(nil, cmd), &back, nil); err != nil {
			t.Fatalf("%+v does not decode: %v", cmd, err)
		}
		if back.Topic != cmd.Topic || back.MemberID != cmd.MemberID || back.TTLMs != cmd.TTLMs || back.Strategy != cmd.Strategy || back.Group != "g" {
			t.Fatalf("round trip %+v -> %+v", cmd, back)
		}
	})
}

// FuzzStreamPositions: a member stream's Last-Event-ID either is refused
// or names positions that print back to an id that parses the same.
func FuzzStreamPositions(f *testing.F) {
	f.Add("0:12,3:40")
	f.Add("")
	f.Add("1:18446744073709551615")
	f.Add("2147483648:1")
	f.Fuzz(func(t *testing.T, id string) {
		pos, ok := parsePositions(id)
		if !ok {
			return
		}
		var parts []string
		for p, o := range pos {
			if p < 0 || o == 1<<64-1 {
				t.Fatalf("%q: position %d:%d", id, p, o)
			}
			parts = append(parts, fmt.Sprintf("%d:%d", p, o))
		}
		back, ok := parsePositions(strings.Join(parts, ","))
		if !ok || !maps.Equal(back, pos) {
			t.Fatalf("%q: %v does not print back (%v)", id, pos, back)
		}
	})
}
