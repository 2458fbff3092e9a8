package httpfront

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"keel/engine"
	"keel/replication"
)

// produce serves POST /broker/topics/{topic}/produce and .../produce-ndjson.
func (s *Server) produce(ctx *fasthttp.RequestCtx, topic string, ndjson bool) {
	start := requestStart(ctx)
	var cmd engine.Command
	msgs := messagesPool.Get().(*[]engine.MessageIn)
	cmd.Messages = (*msgs)[:0]
	defer func() {
		// Propose has copied the messages; drop the references into this
		// request's body before the slice is reused.
		clear(cmd.Messages)
		if cap(cmd.Messages) <= messagesKeepMax {
			*msgs = cmd.Messages[:0]
			messagesPool.Put(msgs)
		}
	}()
	newTopic := false
	if e := s.produceCommand(ctx, topic, ndjson, &cmd, &newTopic); e != nil {
		writeError(ctx, e)
		return
	}
	deadline, e := s.deadlineFrom(ctx)
	if e != nil {
		writeError(ctx, e)
		return
	}
	if newTopic {
		// Last, once the request is known valid: a refused produce spends
		// none of the node's topic-creation allowance.
		if e := s.roomForTopic(s.cfg.DefaultPartitions, deadline); e != nil {
			writeError(ctx, e)
			return
		}
	}
	out, err := s.node.Propose(&cmd, deadline)
	switch {
	case errors.Is(err, replication.ErrTimeout) && s.clustered():
		writeError(ctx, commitTimeout)
		return
	case errors.Is(err, replication.ErrTimeout):
		s.writeProduceTimeout(ctx, &cmd, ndjson)
		return
	case errors.Is(err, replication.ErrNotLeader):
		writeError(ctx, s.notLeaderError(ctx))
		return
	}
	if err == nil {
		err = out.Err
	}
	if err != nil {
		writeError(ctx, mapError(err))
		return
	}
	s.metrics.produced.Add(uint64(out.Count))
	recvParseUs := out.Enqueued.Sub(start).Microseconds()
	// The answer is built in fasthttp's own (pooled) body buffer, taken
	// out and put back with SwapBody: no allocation per produce.
	b := s.appendProduceResult(ctx.Response.SwapBody(nil)[:0], out, ndjson)
	serverUs := time.Since(start).Microseconds()
	if string(ctx.QueryArgs().Peek("timing")) == "1" {
		b = appendIntField(b, "queue_us", out.QueueUs)
		b = appendIntField(b, "recv_parse_us", recvParseUs)
		b = appendIntField(b, "sync_wait_us", out.SyncWaitUs)
		b = appendIntField(b, "produce_us", out.ApplyUs)
		b = appendIntField(b, "server_us", serverUs)
	}
	s.metrics.produceUs.record(recvParseUs, out.QueueUs, serverUs)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Response.SwapBody(append(b, '}'))
}

// messagesPool recycles the message lists of produce commands: an NDJSON
// request of 1000 lines regrew its list about ten times, 5% of the
// server's CPU under NDJSON load.
var messagesPool = sync.Pool{New: func() any { return new([]engine.MessageIn) }}

// messagesKeepMax is the longest message list the pool keeps (96 KiB).
const messagesKeepMax = 2048

// produceCommand validates the request and builds its command into cmd.
// Slices in the command alias the request; Propose copies them before it
// returns.
func (s *Server) produceCommand(ctx *fasthttp.RequestCtx, topic string, ndjson bool, cmd *engine.Command, newTopic *bool) *apiError {
	if !engine.ValidTopicName(topic) {
		return mapError(engine.ErrInvalidTopic)
	}
	args := ctx.QueryArgs()
	msgs := cmd.Messages[:0] // the pooled list produce put there
	*cmd = engine.Command{Kind: engine.CmdProduce, Topic: topic, Partition: -1, Messages: msgs}
	if s.cfg.AutoCreateTopics {
		cmd.AutoCreatePartitions = s.cfg.DefaultPartitions
	}
	p, ok, e := queryInt(args, "partition")
	if e != nil || ok && (p < 0 || p > math.MaxInt32) {
		return errBadRequest("invalid_partition", "partition must be a non-negative integer")
	}
	// Everything is validated before the command is proposed: a refused
	// produce leaves no trace, not even an auto-created topic. (Apply
	// checks the same again, for a topic created meanwhile.)
	t, exists := s.store.Topic(topic)
	if !exists && !s.cfg.AutoCreateTopics {
		return mapError(engine.ErrUnknownTopic)
	}
	*newTopic = !exists
	if ok {
		cmd.Partition = int32(p)
		switch {
		case exists && int(p) >= len(t.Partitions):
			return errBadRequest("invalid_partition", fmt.Sprintf("partition %d is out of range: topic %s has %d", p, topic, len(t.Partitions)))
		case !exists && int(p) >= s.cfg.DefaultPartitions:
			return errBadRequest("invalid_partition", fmt.Sprintf("partition %d is out of range: topic %s does not exist, and would be created with %d partitions; nothing was created", p, topic, s.cfg.DefaultPartitions))
		}
	}
	cmd.IdempotencyKey = args.Peek("idempotency_key")
	if cmd.IdempotencyKey == nil {
		cmd.IdempotencyKey = ctx.Request.Header.Peek("Idempotency-Key")
	}
	if len(cmd.IdempotencyKey) > s.cfg.MaxKeyBytes {
		return errBadRequest("invalid_key", fmt.Sprintf("idempotency_key is longer than %d bytes", s.cfg.MaxKeyBytes))
	}
	body := ctx.PostBody()
	if ndjson {
		return s.ndjsonMessages(cmd, body)
	}
	key := args.Peek("key")
	if len(key) > s.cfg.MaxKeyBytes {
		return errBadRequest("invalid_key", fmt.Sprintf("key is longer than %d bytes", s.cfg.MaxKeyBytes))
	}
	if len(body) > s.cfg.MaxMessageBytes {
		return &apiError{status: 413, code: "message_too_large", message: fmt.Sprintf("the message is %d bytes; max_message_bytes is %d", len(body), s.cfg.MaxMessageBytes)}
	}
	if !ok {
		cmd.PartitionKey = key
	}
	cmd.Messages = append(cmd.Messages, engine.MessageIn{Key: key, Value: body})
	return nil
}

func (s *Server) ndjsonMessages(cmd *engine.Command, body []byte) *apiError {
	if len(body) > s.cfg.MaxBatchBytes {
		return &apiError{status: 413, code: "batch_too_large", message: fmt.Sprintf("the body is %d bytes; max_batch_bytes is %d; nothing was written", len(body), s.cfg.MaxBatchBytes)}
	}
	err := splitNDJSON(body, func(line []byte) error {
		if len(cmd.Messages) >= s.cfg.MaxBatchMessages {
			return &apiError{status: 413, code: "batch_too_large", message: fmt.Sprintf("more than max_batch_messages (%d) lines; nothing was written", s.cfg.MaxBatchMessages)}
		}
		if len(line) > s.cfg.MaxMessageBytes {
			return &apiError{status: 413, code: "message_too_large", message: fmt.Sprintf("line %d is %d bytes; max_message_bytes is %d; nothing was written", len(cmd.Messages)+1, len(line), s.cfg.MaxMessageBytes)}
		}
		cmd.Messages = append(cmd.Messages, engine.MessageIn{Value: line})
		return nil
	})
	if err != nil {
		return err.(*apiError)
	}
	if len(cmd.Messages) == 0 {
		return errBadRequest("empty_batch", "the body has no non-empty line")
	}
	return nil
}

func (s *Server) appendProduceResult(b []byte, out replication.Outcome, ndjson bool) []byte {
	b = append(b, '{')
	b = appendBoolField(b, "ok", true)
	if ndjson {
		b = appendUintField(b, "first_offset", out.Offset)
		b = appendIntField(b, "count", int64(out.Count))
	} else {
		b = appendUintField(b, "offset", out.Offset)
	}
	b = appendIntField(b, "partition", int64(out.Partition))
	b = appendUintField(b, "batch_id", out.Batch)
	b = appendDurability(b, out.Durable)
	return appendBoolField(b, "duplicate", out.Duplicate)
}

// writeProduceTimeout answers a write that was accepted but not confirmed
// durable before timeout_ms: it may still become durable, and the client
// must not treat it as a promise.
func (s *Server) writeProduceTimeout(ctx *fasthttp.RequestCtx, cmd *engine.Command, ndjson bool) {
	b := append(make([]byte, 0, 256), '{')
	b = appendBoolField(b, "ok", true)
	if ndjson {
		b = appendNullField(b, "first_offset")
		b = appendIntField(b, "count", int64(len(cmd.Messages)))
	} else {
		b = appendNullField(b, "offset")
	}
	if cmd.Partition >= 0 {
		b = appendIntField(b, "partition", int64(cmd.Partition))
	} else {
		b = appendNullField(b, "partition")
	}
	b = appendUintField(b, "batch_id", 0)
	b = appendBoolField(b, "sealed", false)
	b = appendBoolField(b, "durable", false)
	b = appendStringField(b, "mode", "sealed")
	b = appendBoolField(b, "synced", false)
	b = appendBoolField(b, "timeout", true)
	writeJSON(ctx, fasthttp.StatusOK, append(b, '}'))
}
