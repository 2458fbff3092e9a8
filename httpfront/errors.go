package httpfront

import (
	_ "embed"
	"errors"
	"log/slog"
	"strconv"
	"syscall"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/replication"
	"keel/ring"
)

// errorsDoc is served at /docs/errors; every error body links into it.
//
//go:embed errors.md
var errorsDoc []byte

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds; 0 = no Retry-After header
	extra      func(dst []byte) []byte
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errBadRequest(code, message string) *apiError {
	return &apiError{status: fasthttp.StatusBadRequest, code: code, message: message}
}

// writeError writes {"ok":false,"error":code,"message":...,"docs":url}.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.SetUserValue(errorCodeKey, e.code)
	b := append(make([]byte, 0, 256), '{')
	b = appendBoolField(b, "ok", false)
	b = appendStringField(b, "error", e.code)
	b = appendStringField(b, "message", e.message)
	b = appendStringField(b, "docs", docsURL(ctx, e.code))
	if e.extra != nil {
		b = e.extra(b)
	}
	b = append(b, '}')
	if e.retryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(ctx, e.status, b)
}

func docsURL(ctx *fasthttp.RequestCtx, code string) string {
	host := string(ctx.Host())
	if host == "" {
		host = "localhost"
	}
	return "http://" + host + "/docs/errors#" + code
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// mapError turns an error from replication or engine into the API error.
// It is the one place that decides status codes for them.
func mapError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case groupError(err) != nil:
		return groupError(err)
	case errors.Is(err, engine.ErrUnknownTopic):
		return &apiError{status: 404, code: "unknown_topic", message: "the topic does not exist"}
	case errors.Is(err, engine.ErrInvalidKey):
		return errBadRequest("invalid_key", "a KV key is 1 to 1024 bytes")
	case errors.Is(err, engine.ErrUnknownPartition):
		return &apiError{status: 404, code: "unknown_partition", message: "the partition does not exist in this topic"}
	case errors.Is(err, engine.ErrInvalidPartition):
		return errBadRequest("invalid_partition", "partition is out of range for this topic")
	case errors.Is(err, engine.ErrTopicExists):
		return &apiError{status: 409, code: "topic_exists", message: "the topic exists with another partition count"}
	case errors.Is(err, engine.ErrOffsetOutOfRange):
		return errBadRequest("offset_out_of_range", "the offset is past the end of the partition")
	case errors.Is(err, engine.ErrInvalidTopic):
		return errBadRequest("invalid_topic", "topic names are 1-249 characters of [A-Za-z0-9._-], not . or ..")
	case errors.Is(err, engine.ErrInvalidGroup):
		return errBadRequest("invalid_group", "group names are 1-249 printable characters")
	case errors.Is(err, engine.ErrTooManyTopics):
		return &apiError{status: 409, code: "too_many_topics", message: "the node holds max_topics topics; delete one or raise --max-topics"}
	case errors.Is(err, engine.ErrTooManyPartitions):
		return &apiError{status: 409, code: "too_many_partitions", message: "the node holds its limit of partitions (each holds a file descriptor); raise --max-total-partitions (and ulimit -n)"}
	case errors.Is(err, engine.ErrTooManyOffsets):
		return &apiError{status: 409, code: "too_many_offsets", message: "the node holds its limit of committed consumer offsets; raise --max-consumer-offsets"}
	case errors.Is(err, engine.ErrInvalidPartitions):
		return errBadRequest("invalid_partitions", "partitions must be between 1 and max_partitions")
	case errors.Is(err, replication.ErrOverloaded):
		return &apiError{status: 503, code: "overloaded", message: "too many writes are waiting; retry shortly", retryAfter: 1}
	case errors.Is(err, replication.ErrNoLeader):
		return &apiError{status: 503, code: "no_leader", message: "no leader is elected yet; retry shortly", retryAfter: 1}
	case errors.Is(err, replication.ErrStopped):
		return &apiError{status: 503, code: "shutting_down", message: "the node is shutting down", retryAfter: 1}
	case errors.Is(err, replication.ErrTimeout):
		return &apiError{status: 503, code: "timeout", message: "the write was not confirmed before the deadline; it may still take effect", retryAfter: 1}
	case errors.Is(err, replication.ErrTooLarge):
		return &apiError{status: 413, code: "batch_too_large", message: "the request is larger than one replicated entry"}
	case errors.Is(err, syscall.ENOSPC):
		return &apiError{status: 507, code: "disk_full", message: "the disk is full: this node takes no more writes until space is freed and it is restarted (a write in flight may have been stored; retry with an idempotency key)"}
	}
	// Fixed texts: the error itself (paths, OS errors) is in the server's
	// log, where replication and the handlers report it.
	var fault *ring.FaultError
	if errors.As(err, &fault) {
		return &apiError{status: 503, code: "storage_fault", message: "the node stopped taking writes after a storage fault (see its log); restart it once the disk is fixed", retryAfter: 5}
	}
	// The answer carries a fixed text; the cause goes to the process's
	// logger (keel serve makes its logger slog's default).
	slog.Error("internal error (answered 500)", "err", err)
	return &apiError{status: 500, code: "internal", message: "an internal error; the server logged it"}
}
