package query

import (
	"container/list"
	"crypto/sha256"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// SchemaTextBytesMax bounds one inline schema (Avro JSON or .proto text).
const SchemaTextBytesMax = 256 << 10

// Schemas caches compiled schemas by the hash of their text, so a client
// repeating a query pays for compiling its schema once. The cache holds
// at most its bound of entries and drops the least recently used.
// Safe for concurrent use; what it holds is read-only.
type Schemas struct {
	mu      sync.Mutex
	max     int
	entries map[[32]byte]*list.Element
	lru     list.List // front: most recently used
	hits    uint64
	misses  uint64
}

type compiledSchema struct {
	key   [32]byte
	avro  *avroSchema
	proto protoreflect.MessageDescriptor
}

// NewSchemas returns a cache holding up to entriesMax compiled schemas (at
// least 1).
func NewSchemas(entriesMax int) *Schemas {
	return &Schemas{max: max(1, entriesMax), entries: map[[32]byte]*list.Element{}}
}

// Stats returns the cache's hits and misses so far.
func (c *Schemas) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

func (c *Schemas) compiled(spec *DecodeSpec) (*compiledSchema, *Error) {
	h := sha256.New()
	h.Write([]byte(spec.Type))
	h.Write([]byte{0})
	h.Write([]byte(spec.Message))
	h.Write([]byte{0})
	h.Write([]byte(spec.SchemaText))
	var key [32]byte
	h.Sum(key[:0])
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		c.lru.MoveToFront(e)
		c.hits++
		c.mu.Unlock()
		return e.Value.(*compiledSchema), nil
	}
	c.misses++
	c.mu.Unlock()
	// Compiled outside the lock: a slow schema does not hold up others.
	cs := &compiledSchema{key: key}
	var err *Error
	switch spec.Type {
	case "avro":
		cs.avro, err = compileAvro(spec.SchemaText)
	case "proto":
		cs.proto, err = compileProto(spec.SchemaText, spec.Message)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok { // compiled meanwhile by another request
		return e.Value.(*compiledSchema), nil
	}
	c.entries[key] = c.lru.PushFront(cs)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*compiledSchema).key)
	}
	return cs, nil
}

// newDecoder checks a source's decode spec and returns a decoder for the
// fields fs names (fs must be complete: decoders resolve fields once).
func (c *Schemas) newDecoder(spec *DecodeSpec, fs *fieldSet) (decoder, *Error) {
	if spec == nil {
		spec = &DecodeSpec{}
	}
	switch spec.Encoding {
	case "", "binary", "json":
	default:
		return nil, badRequest("invalid_decode", "decode.encoding must be binary or json, not %q", spec.Encoding)
	}
	switch spec.Type {
	case "", "json":
		return &jsonDecoder{}, nil
	case "avro", "proto":
	default:
		return nil, badRequest("invalid_decode", "decode.type must be json, avro or proto, not %q", spec.Type)
	}
	if spec.SchemaText == "" {
		return nil, badRequest("invalid_schema", "decode.type %s needs decode.schema_text", spec.Type)
	}
	if len(spec.SchemaText) > SchemaTextBytesMax {
		return nil, tooLarge("schema_too_large", "decode.schema_text is %d bytes; the limit is %d", len(spec.SchemaText), SchemaTextBytesMax)
	}
	cs, err := c.compiled(spec)
	if err != nil {
		return nil, err
	}
	defaults := spec.ApplyDefaults == nil || *spec.ApplyDefaults
	if cs.proto != nil {
		return newProtoDecoder(cs.proto, spec, fs), nil
	}
	if spec.Encoding == "json" {
		return &avroJSONDecoder{s: cs.avro, defaults: defaults, aliases: spec.FieldAliases}, nil
	}
	return newAvroBinaryDecoder(cs.avro, fs), nil
}
