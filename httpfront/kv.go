package httpfront

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/replication"
)

// The KV routes (api.md "KV store"). The path is /kv/{ns}/{key}, where the
// key is the rest of the path (it may contain "/"), URL-decoded as a
// whole; a literal trailing "/meta" asks for the key's metadata (a key
// that itself ends in "/meta" is written with its last slash encoded,
// "%2Fmeta"). /kv/{ns} lists keys.

// kvPath splits a raw path after "/kv/" into the namespace, the key and
// whether "/meta" was asked for.
func kvPath(rest string) (ns, key string, meta bool, e *apiError) {
	nsRaw, keyRaw, _ := strings.Cut(rest, "/")
	if keyRaw != "" {
		if k, ok := strings.CutSuffix(keyRaw, "/meta"); ok {
			keyRaw, meta = k, true
		}
	}
	var err error
	if ns, err = url.PathUnescape(nsRaw); err != nil {
		return "", "", false, errBadRequest("bad_request", "the path is not valid URL encoding")
	}
	if key, err = url.PathUnescape(keyRaw); err != nil {
		return "", "", false, errBadRequest("bad_request", "the path is not valid URL encoding")
	}
	return ns, key, meta, nil
}

// kv serves /kv/{ns}/{key}: POST (put), GET (get, or a watch with
// wait_ms), DELETE; and GET /kv/{ns}/{key}/meta.
func (s *Server) kv(ctx *fasthttp.RequestCtx, ns, key string, meta bool) {
	if !engine.ValidTopicName(ns) {
		writeError(ctx, errBadRequest("invalid_namespace", "namespaces are 1–249 characters of [A-Za-z0-9._-]"))
		return
	}
	if !engine.ValidKVKey([]byte(key)) {
		writeError(ctx, errBadRequest("invalid_key", "a key is 1 to "+strconv.Itoa(engine.KVKeyBytesMax)+" bytes of UTF-8"))
		return
	}
	switch {
	case ctx.IsPost():
		if meta {
			writeError(ctx, &apiError{status: 405, code: "method_not_allowed", message: "/meta is read-only; use GET (to write a key ending in /meta, encode its last slash: %2Fmeta)"})
			return
		}
		s.kvPut(ctx, ns, key)
	case ctx.IsDelete():
		if meta {
			// A key ending in /meta is written %2Fmeta: deleting "x/meta"
			// here must not delete x.
			writeError(ctx, &apiError{status: 405, code: "method_not_allowed", message: "/meta is read-only; to delete a key ending in /meta, encode its last slash (%2Fmeta)"})
			return
		}
		s.kvDelete(ctx, ns, key)
	default:
		s.kvGet(ctx, ns, key, meta)
	}
}

// kvCAS reads the cas query parameter: absent, or a 64-bit unsigned
// integer.
func kvCAS(ctx *fasthttp.RequestCtx) (uint64, bool, *apiError) {
	raw := ctx.QueryArgs().Peek("cas")
	if raw == nil {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, true, errBadRequest("invalid_cas", "cas must be a non-negative 64-bit integer (0: create only if absent)")
	}
	return v, true, nil
}

func (s *Server) kvPut(ctx *fasthttp.RequestCtx, ns, key string) {
	cas, hasCAS, e := kvCAS(ctx)
	if e != nil {
		writeError(ctx, e)
		return
	}
	ttl, e := queryClamped(ctx.QueryArgs(), "ttl_ms", 0, 0, 1<<62, "must be a non-negative integer of milliseconds (0: no expiry)")
	if e != nil {
		writeError(ctx, e)
		return
	}
	n, exists := s.store.KV(ns)
	if !exists {
		if _, partitions, _ := s.store.Counts(); partitions+1 > s.cfg.Limits.PartitionsTotalMax {
			writeError(ctx, mapError(engine.ErrTooManyPartitions))
			return
		}
	}
	if s.cfg.MaxKVKeys > 0 && s.store.KVKeys() >= s.cfg.MaxKVKeys {
		// Checked before proposing (each key costs index memory); an
		// overwrite of an existing key still goes through.
		if !s.store.KVHeld(n, []byte(key)) {
			writeError(ctx, &apiError{status: 409, code: "too_many_keys", message: "the node holds --max-kv-keys keys; delete some or raise the limit"})
			return
		}
	}
	cmd := &engine.Command{Kind: engine.CmdKVPut, Topic: ns, KVKey: []byte(key), KVValue: ctx.PostBody(), HasCAS: hasCAS, CAS: cas, TTLMs: ttl}
	s.kvWrite(ctx, cmd, func(b []byte, out replication.Outcome) []byte {
		s.metrics.kvPuts.Add(1)
		return appendUintField(b, "cas", out.CAS)
	})
}

// kvWrite proposes a put or a delete and answers it: the fields that
// fields appends, then how durable the write is.
func (s *Server) kvWrite(ctx *fasthttp.RequestCtx, cmd *engine.Command, fields func([]byte, replication.Outcome) []byte) {
	out, e := s.proposeOutcome(ctx, cmd)
	if e != nil {
		writeError(ctx, e)
		return
	}
	if out.Err != nil {
		writeError(ctx, kvError(out.Err, out.CAS, out.ExpectedCAS))
		return
	}
	b := append(make([]byte, 0, 128), '{')
	b = appendBoolField(b, "ok", true)
	b = fields(b, out)
	b = appendDurability(b, out.Durable)
	b = appendUintField(b, "batch_id", out.Batch)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

func (s *Server) kvDelete(ctx *fasthttp.RequestCtx, ns, key string) {
	cas, hasCAS, e := kvCAS(ctx)
	if e != nil {
		writeError(ctx, e)
		return
	}
	cmd := &engine.Command{Kind: engine.CmdKVDelete, Topic: ns, KVKey: []byte(key), HasCAS: hasCAS, CAS: cas}
	s.kvWrite(ctx, cmd, func(b []byte, out replication.Outcome) []byte {
		return appendBoolField(b, "deleted", out.KVDeleted)
	})
}

// kvGet answers the value ({"value":"<base64>","cas":N}) or the metadata
// ({"cas":N,"ttl_ms":remaining}). With wait_ms it is a watch: it waits
// (at most wait_ms) until the key's cas differs from after_cas (default:
// its cas when the request arrived), so a client learns of the next
// change, a delete or an expiry included.
func (s *Server) kvGet(ctx *fasthttp.RequestCtx, ns, key string, meta bool) {
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	waitMs, e := queryClamped(ctx.QueryArgs(), "wait_ms", 0, 0, s.cfg.WaitMax.Milliseconds(), "must be a non-negative integer of milliseconds")
	if e != nil {
		writeError(ctx, e)
		return
	}
	var afterCAS uint64
	hasAfter := false
	if raw := ctx.QueryArgs().Peek("after_cas"); raw != nil {
		v, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			writeError(ctx, errBadRequest("invalid_after_cas", "after_cas must be a non-negative 64-bit integer"))
			return
		}
		afterCAS, hasAfter = v, true
	}
	deadline := time.Now().Add(time.Duration(waitMs) * time.Millisecond)
	for first := true; ; first = false {
		n, nsOK := s.store.KV(ns)
		var changed <-chan struct{}
		var entry engine.KVEntry
		live, expired := false, false
		if nsOK {
			if waitMs > 0 {
				changed = n.Changed() // before the lookup: no change is missed
			}
			var held bool
			entry, held = s.store.KVLookup(n, []byte(key))
			expired = held && entry.Expired(time.Now().UnixMilli())
			live = held && !expired
		}
		cur := uint64(0)
		if live {
			cur = entry.CAS
		}
		if first && !hasAfter {
			afterCAS, hasAfter = cur, waitMs > 0
		}
		waiting := waitMs > 0 && cur == afterCAS && time.Now().Before(deadline)
		if !waiting {
			if !live {
				writeNotFound(ctx, expired)
				return
			}
			s.writeKV(ctx, n, entry, meta)
			return
		}
		timer := time.NewTimer(time.Until(deadline))
		if changed == nil { // no namespace yet: poll for its creation
			timer.Reset(min(time.Until(deadline), 50*time.Millisecond))
		}
		// A key's expiry changes its answer without any write: wake then too.
		if live && entry.ExpiresMs != 0 {
			if d := time.Until(time.UnixMilli(entry.ExpiresMs)); d < time.Until(deadline) {
				timer.Reset(max(d, 0))
			}
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			deadline = time.Now()
		}
		timer.Stop()
	}
}

func (s *Server) writeKV(ctx *fasthttp.RequestCtx, n *engine.KVNamespace, e engine.KVEntry, meta bool) {
	b := append(make([]byte, 0, 128), '{')
	if meta {
		b = appendUintField(b, "cas", e.CAS)
		ttl := int64(0)
		if e.ExpiresMs != 0 {
			ttl = max(e.ExpiresMs-time.Now().UnixMilli(), 1)
		}
		b = appendIntField(b, "ttl_ms", ttl)
		writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
		return
	}
	v, err := s.store.KVValue(n, e, nil)
	for try := 0; errors.Is(err, engine.ErrKVVersionGone) && try < 3; try++ {
		// Written again since the lookup, and the old version compacted
		// away: the key's current version is newer.
		var ok bool
		if e, ok = s.store.KVLookup(n, []byte(e.Key)); !ok || e.Expired(time.Now().UnixMilli()) {
			writeNotFound(ctx, ok)
			return
		}
		v, err = s.store.KVValue(n, e, nil)
	}
	if err != nil {
		writeError(ctx, mapError(err))
		return
	}
	s.metrics.kvGets.Add(1)
	b = appendKey(b, "value")
	b = appendBase64(b, v)
	b = appendUintField(b, "cas", e.CAS)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

func writeNotFound(ctx *fasthttp.RequestCtx, expired bool) {
	msg := "the key does not exist (never written, or deleted)"
	if expired {
		msg = "the key expired (its ttl_ms passed)"
	}
	writeError(ctx, &apiError{status: 404, code: "not_found", message: msg,
		extra: func(b []byte) []byte { return appendBoolField(b, "expired", expired) }})
}

// kvList serves GET /kv/{ns}?prefix=&after=&limit= →
// {"ok":true,"keys":[{"key","cas","ttl_ms"}],"count":N,"more":bool,"next_after":K}:
// keys in byte order, expired ones left out; a client pages by passing
// next_after as after.
func (s *Server) kvList(ctx *fasthttp.RequestCtx, ns string) {
	if !engine.ValidTopicName(ns) {
		writeError(ctx, errBadRequest("invalid_namespace", "namespaces are 1–249 characters of [A-Za-z0-9._-]"))
		return
	}
	if e := s.linearizable(ctx); e != nil {
		writeError(ctx, e)
		return
	}
	limit, e := queryClamped(ctx.QueryArgs(), "limit", 100, 1, 1000, "must be a positive integer")
	if e != nil {
		writeError(ctx, e)
		return
	}
	prefix, after := string(ctx.QueryArgs().Peek("prefix")), string(ctx.QueryArgs().Peek("after"))
	b := append(make([]byte, 0, 1024), '{')
	b = appendBoolField(b, "ok", true)
	b = appendStringField(b, "namespace", ns)
	b = append(appendKey(b, "keys"), '[')
	count, more, last := 0, false, ""
	if n, ok := s.store.KV(ns); ok {
		now := time.Now().UnixMilli()
		for int64(count) < limit {
			page, m := s.store.KVList(n, prefix, after, int(limit)-count)
			for _, e := range page {
				after = e.Key
				if e.Expired(now) {
					continue
				}
				if count > 0 {
					b = append(b, ',')
				}
				b = append(b, '{')
				b = appendJSONString(appendKey(b, "key"), []byte(e.Key))
				b = appendUintField(b, "cas", e.CAS)
				ttl := int64(0)
				if e.ExpiresMs != 0 {
					ttl = max(e.ExpiresMs-now, 1)
				}
				b = appendIntField(b, "ttl_ms", ttl)
				b = append(b, '}')
				count++
				last = e.Key
			}
			if more = m; !m {
				break
			}
		}
	}
	b = append(b, ']')
	b = appendIntField(b, "count", int64(count))
	b = appendBoolField(b, "more", more)
	if more {
		b = appendJSONString(appendKey(b, "next_after"), []byte(last))
	}
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}

// kvError maps a KV command error; a cas mismatch carries the expected and
// current cas (0: no such key).
func kvError(err error, current, expected uint64) *apiError {
	if errors.Is(err, engine.ErrCASMismatch) {
		return &apiError{status: 409, code: "cas_mismatch", message: "the key's cas is not the one given; read it again and retry",
			extra: func(b []byte) []byte {
				b = appendUintField(b, "expected", expected)
				return appendUintField(b, "current", current)
			}}
	}
	return mapError(err)
}

// appendDurability appends the fields that say how durable a write is:
// fsynced (and replicated) before the answer, or rocket mode.
func appendDurability(b []byte, durable bool) []byte {
	if durable {
		b = appendBoolField(b, "sealed", true)
		b = appendBoolField(b, "durable", true)
		b = appendStringField(b, "mode", "sealed")
		b = appendBoolField(b, "synced", true)
	} else {
		b = appendBoolField(b, "sealed", false)
		b = appendBoolField(b, "durable", false)
		b = appendStringField(b, "mode", "rocket")
		b = appendNullField(b, "synced")
	}
	return b
}
