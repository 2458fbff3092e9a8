package httpfront

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"keel/engine/logstore"
	"keel/netio"
	"keel/replication"

	"github.com/valyala/fasthttp"
)

// metrics holds the counters the HTTP front keeps itself; gauges are read
// from the node and the store when /metrics is served.
type metrics struct {
	mu        sync.Mutex
	requests  map[requestKey]*atomic.Uint64
	durations map[string]*durationHistogram // by route label

	produced atomic.Uint64
	consumed atomic.Uint64
	commits  atomic.Uint64
	kvPuts   atomic.Uint64
	kvGets   atomic.Uint64

	queries        atomic.Uint64 // stream queries and joins run
	queriesRefused atomic.Uint64 // of which refused (bad request, limits, errors)
	queryNs        atomic.Uint64 // time spent running them

	streamsRefused atomic.Uint64 // event streams refused over StreamsMax

	bodyBudgetRefused atomic.Uint64 // requests refused: BodyBytesInFlightMax was held
	acceptRetries     atomic.Uint64 // accepts retried after EMFILE and the like
	connsRefused      atomic.Uint64 // connections refused over MaxConns or MaxConnsPerIP
	createsLimited    atomic.Uint64 // new topics refused by TopicCreateRate (their turn came after their timeout)
	createsPaced      atomic.Uint64 // new topics that waited for their turn

	// Produce stages (see timing=1), in microseconds.
	produceUs *shardedHists // recv_parse, queue, server (produceStage*)
}

// The produce stages, in the order produceUs records them.
const (
	produceStageRecvParse = iota
	produceStageQueue
	produceStageServer
	produceStages
)

type requestKey struct {
	route string
	code  int
}

func newMetrics() *metrics {
	return &metrics{
		requests:  map[requestKey]*atomic.Uint64{},
		durations: map[string]*durationHistogram{},
		produceUs: newShardedHists(produceStages),
	}
}

func (m *metrics) countRequest(route string, code int) {
	k := requestKey{route, code}
	m.mu.Lock()
	c, ok := m.requests[k]
	if !ok {
		c = new(atomic.Uint64)
		m.requests[k] = c
	}
	m.mu.Unlock()
	c.Add(1)
}

// recordDuration adds a request's time (request start to answer built)
// to its route's histogram.
func (m *metrics) recordDuration(route string, d time.Duration) {
	m.mu.Lock()
	h, ok := m.durations[route]
	if !ok {
		h = &durationHistogram{}
		m.durations[route] = h
	}
	m.mu.Unlock()
	h.record(d)
}

func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	w := promWriter{b: make([]byte, 0, 8192)}
	s.writeRequestMetrics(&w)
	w.help("keel_produced_messages_total", "counter", "messages acknowledged to producers")
	w.sample("keel_produced_messages_total", nil, s.metrics.produced.Load())
	w.help("keel_consumed_messages_total", "counter", "messages returned to consumers")
	w.sample("keel_consumed_messages_total", nil, s.metrics.consumed.Load())
	w.help("keel_commits_total", "counter", "consumer offset commits acknowledged")
	w.sample("keel_commits_total", nil, s.metrics.commits.Load())
	w.help("keel_kv_puts_total", "counter", "KV puts acknowledged")
	w.sample("keel_kv_puts_total", nil, s.metrics.kvPuts.Load())
	w.help("keel_kv_gets_total", "counter", "KV values read")
	w.sample("keel_kv_gets_total", nil, s.metrics.kvGets.Load())
	w.help("keel_streams_open", "gauge", "Server-Sent Events streams open (GET /broker/stream/...; bounded by --max-streams)")
	w.sample("keel_streams_open", nil, uint64(max(0, s.streamsOpen.Load())))
	w.help("keel_streams_refused_total", "counter", "event streams refused with 503 too_many_streams")
	w.sample("keel_streams_refused_total", nil, s.metrics.streamsRefused.Load())
	w.help("keel_queries_total", "counter", "stream queries and joins run (POST /broker/query, /broker/join)")
	w.sample("keel_queries_total", nil, s.metrics.queries.Load())
	w.help("keel_queries_refused_total", "counter", "stream queries and joins answered with an error")
	w.sample("keel_queries_refused_total", nil, s.metrics.queriesRefused.Load())
	w.help("keel_query_seconds_total", "counter", "time spent running stream queries and joins")
	w.sampleFloat("keel_query_seconds_total", float64(s.metrics.queryNs.Load())/1e9)
	hits, misses := s.queries.SchemaStats()
	w.help("keel_query_schema_cache_hits_total", "counter", "inline schemas found compiled in the cache")
	w.sample("keel_query_schema_cache_hits_total", nil, hits)
	w.help("keel_query_schema_cache_misses_total", "counter", "inline schemas compiled")
	w.sample("keel_query_schema_cache_misses_total", nil, misses)
	w.help("keel_kv_keys", "gauge", "keys held by every KV namespace (expired ones not yet purged included)")
	w.sample("keel_kv_keys", nil, uint64(s.store.KVKeys()))
	cs := s.store.CompactionStats()
	w.help("keel_compaction_segments_total", "counter", "segments rewritten by log compaction")
	w.sample("keel_compaction_segments_total", nil, cs.Segments)
	w.help("keel_compaction_removed_records_total", "counter", "records log compaction removed (superseded versions, old tombstones)")
	w.sample("keel_compaction_removed_records_total", nil, cs.Removed)
	w.help("keel_compaction_freed_bytes_total", "counter", "bytes log compaction gave back")
	w.sample("keel_compaction_freed_bytes_total", nil, uint64(max(0, cs.FreedBytes)))
	w.help("keel_compaction_skipped_total", "counter", "compaction passes skipped: a partition with more keys than one pass holds")
	w.sample("keel_compaction_skipped_total", nil, cs.Skipped)
	janSegs, janBytes, janPending := s.store.JanitorStats()
	w.help("keel_retention_deleted_segments_total", "counter", "segment files deleted below log starts (retention, delete-before)")
	w.sample("keel_retention_deleted_segments_total", nil, uint64(janSegs))
	w.help("keel_retention_freed_bytes_total", "counter", "bytes those segment files held")
	w.sample("keel_retention_freed_bytes_total", nil, uint64(janBytes))
	w.help("keel_retention_pending_deletions", "gauge", "sets of segments waiting to be deleted")
	w.sample("keel_retention_pending_deletions", nil, uint64(janPending))
	w.help("keel_body_bytes_in_flight", "gauge", "request bodies and consume answers held in memory now, bytes (limit: BodyBytesInFlightMax, 256 MiB)")
	w.sample("keel_body_bytes_in_flight", nil, uint64(max(0, s.inFlight.Load())))
	w.help("keel_accept_retries_total", "counter", "accepts that failed for lack of descriptors or memory and were retried after a pause")
	w.sample("keel_accept_retries_total", nil, s.metrics.acceptRetries.Load())
	w.help("keel_connections_refused_total", "counter", "connections answered 503/429 and closed over --max-conns or --max-conns-per-ip")
	w.sample("keel_connections_refused_total", nil, s.metrics.connsRefused.Load())
	w.help("keel_topic_creates_limited_total", "counter", "new topics refused with 429: their turn under --topic-create-rate came after their timeout")
	w.sample("keel_topic_creates_limited_total", nil, s.metrics.createsLimited.Load())
	w.help("keel_topic_creates_paced_total", "counter", "new topics that waited for their turn under --topic-create-rate")
	w.sample("keel_topic_creates_paced_total", nil, s.metrics.createsPaced.Load())
	w.help("keel_body_budget_refused_total", "counter", "requests answered 503 overloaded because bodies and answers held the in-memory budget")
	w.sample("keel_body_budget_refused_total", nil, s.metrics.bodyBudgetRefused.Load())
	s.writeNodeMetrics(&w)
	s.writeTimingMetrics(&w)
	s.writeDataMetrics(&w)
	ctx.SetContentType("text/plain; version=0.0.4")
	ctx.SetBody(w.b)
}

func (s *Server) writeRequestMetrics(w *promWriter) {
	s.metrics.mu.Lock()
	keys := make([]requestKey, 0, len(s.metrics.requests))
	for k := range s.metrics.requests {
		keys = append(keys, k)
	}
	s.metrics.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].route < keys[j].route || keys[i].route == keys[j].route && keys[i].code < keys[j].code
	})
	w.help("keel_requests_total", "counter", "HTTP requests by route and status code")
	for _, k := range keys {
		s.metrics.mu.Lock()
		v := s.metrics.requests[k].Load()
		s.metrics.mu.Unlock()
		w.sample("keel_requests_total", []string{"route", k.route, "code", strconv.Itoa(k.code)}, v)
	}
	s.metrics.mu.Lock()
	routes := make([]string, 0, len(s.metrics.durations))
	for r := range s.metrics.durations {
		routes = append(routes, r)
	}
	s.metrics.mu.Unlock()
	sort.Strings(routes)
	w.help("keel_http_request_duration_seconds", "histogram", "HTTP requests by route: request start to answer built, seconds")
	for _, r := range routes {
		s.metrics.mu.Lock()
		h := s.metrics.durations[r]
		s.metrics.mu.Unlock()
		w.writeDurationHistogram("keel_http_request_duration_seconds", []string{"route", r}, h)
	}
}

// writeRecoveryMetrics exports what the node's startup recovery found and
// did, and the sealed-segment file cache.
func (s *Server) writeRecoveryMetrics(w *promWriter) {
	sum := s.store.Recovery()
	wal, replayed := s.node.Recovery()
	w.help("keel_recovery_cut_bytes", "gauge", "bytes of torn tails cut at startup (written after the last fsync, never acknowledged), by log kind")
	w.sample("keel_recovery_cut_bytes", []string{"log", "partition"}, uint64(sum.CutBytes))
	w.sample("keel_recovery_cut_bytes", []string{"log", "wal"}, uint64(wal.CutBytes))
	w.help("keel_recovery_cut_logs", "gauge", "partition logs whose torn tail was cut at startup")
	w.sample("keel_recovery_cut_logs", nil, uint64(sum.CutLogs))
	w.help("keel_recovery_scanned_bytes", "gauge", "bytes of active segments read and checked at startup, by log kind")
	w.sample("keel_recovery_scanned_bytes", []string{"log", "partition"}, uint64(sum.ScannedBytes))
	w.sample("keel_recovery_scanned_bytes", []string{"log", "wal"}, uint64(wal.ScannedBytes))
	w.help("keel_recovery_seconds", "gauge", "startup: opening the data, replaying the WAL and electing, until the node served")
	w.sampleFloat("keel_recovery_seconds", s.cfg.RecoveryDuration.Seconds())
	w.help("keel_recovery_replayed_entries", "gauge", "Raft entries after the state checkpoint replayed at startup")
	w.sample("keel_recovery_replayed_entries", nil, uint64(replayed))
	open, opens, evictions := logstore.SealedFilesStats()
	w.help("keel_sealed_files_open", "gauge", "sealed segment files open now (bounded by --sealed-files-max)")
	w.sample("keel_sealed_files_open", nil, uint64(open))
	w.help("keel_sealed_file_opens_total", "counter", "sealed segment files reopened on read")
	w.sample("keel_sealed_file_opens_total", nil, opens)
	w.help("keel_sealed_file_evictions_total", "counter", "sealed segment files closed to stay within --sealed-files-max")
	w.sample("keel_sealed_file_evictions_total", nil, evictions)
}

func (s *Server) writeNodeMetrics(w *promWriter) {
	s.writeRecoveryMetrics(w)
	st := s.node.Status()
	w.help("keel_raft_term", "gauge", "current Raft term")
	w.sample("keel_raft_term", nil, st.Term)
	w.help("keel_raft_role", "gauge", "1 for this node's Raft role")
	w.sample("keel_raft_role", []string{"role", st.Role}, 1)
	w.help("keel_raft_commit_index", "gauge", "highest Raft index known committed")
	w.sample("keel_raft_commit_index", nil, st.Commit)
	w.help("keel_raft_applied_index", "gauge", "highest Raft index applied to the state machine")
	w.sample("keel_raft_applied_index", nil, st.Applied)
	w.help("keel_wal_last_synced_batch", "gauge", "last WAL group commit made durable")
	w.sample("keel_wal_last_synced_batch", nil, st.LastSyncedBatch)
	w.help("keel_wal_records", "gauge", "WAL records kept (since the last truncation)")
	w.sample("keel_wal_records", nil, st.WALNext-st.WALStart)
	w.help("keel_write_behind_failures_total", "counter", "write-behind hints (sync_file_range) the kernel refused; the data is still made durable by fsync")
	w.sample("keel_write_behind_failures_total", nil, st.WALWriteBehindFailures+s.store.WriteBehindFailures())
	w.help("keel_checkpoints_total", "counter", "state checkpoints written since start")
	w.sample("keel_checkpoints_total", nil, st.Checkpoints)
	w.help("keel_ready", "gauge", "1 when the node serves reads and writes")
	w.sample("keel_ready", nil, boolGauge(st.Ready))
	w.help("keel_io_backend", "gauge", "1 for the I/O backend in use (uring or syscall)")
	w.sample("keel_io_backend", []string{"backend", s.cfg.IOBackend}, 1)
	s.writePeerMetrics(w, st)
	var fs syscall.Statfs_t
	if s.cfg.DataDir != "" && syscall.Statfs(s.cfg.DataDir, &fs) == nil {
		w.help("keel_disk_free_bytes", "gauge", "bytes free on the data directory's filesystem")
		w.sample("keel_disk_free_bytes", nil, fs.Bavail*uint64(fs.Bsize))
	}
}

// writePeerMetrics: in a cluster, per peer, the stream's counters and (on
// the leader) the replication lag.
func (s *Server) writePeerMetrics(w *promWriter, st replication.Status) {
	stats := s.node.PeerStats()
	if len(stats) == 0 {
		return
	}
	names := make([]string, 0, len(stats))
	for name := range stats {
		names = append(names, name)
	}
	slices.Sort(names)
	metric := func(name, typ, help string, v func(netio.PeerStats) uint64) {
		w.help(name, typ, help)
		for _, peer := range names {
			w.sample(name, []string{"peer", peer}, v(stats[peer]))
		}
	}
	metric("keel_peer_connected", "gauge", "1 while the stream to the peer is connected", func(p netio.PeerStats) uint64 { return boolGauge(p.Connected) })
	metric("keel_peer_sent_bytes_total", "counter", "bytes written to the peer, framing included", func(p netio.PeerStats) uint64 { return p.SentBytes })
	metric("keel_peer_sent_messages_total", "counter", "messages written to the peer", func(p netio.PeerStats) uint64 { return p.Sent })
	metric("keel_peer_frames_total", "counter", "frames (writes) to the peer", func(p netio.PeerStats) uint64 { return p.Frames })
	metric("keel_peer_dropped_total", "counter", "messages for the peer dropped (queue full or connection lost; raft resends)", func(p netio.PeerStats) uint64 { return p.Dropped })
	metric("keel_peer_reconnects_total", "counter", "connections to the peer made after the first", func(p netio.PeerStats) uint64 { return p.Reconnects })
	metric("keel_peer_queued_messages", "gauge", "messages waiting for the peer now", func(p netio.PeerStats) uint64 { return uint64(p.Queued) })
	if len(st.Followers) > 0 {
		w.help("keel_peer_lag_entries", "gauge", "leader: committed entries not known to be in the peer's log")
		for _, f := range st.Followers {
			if m, ok := s.node.Member(f.ID); ok {
				w.sample("keel_peer_lag_entries", []string{"peer", m.Name}, st.Commit-min(st.Commit, f.Match))
			}
		}
	}
}

func (s *Server) writeTimingMetrics(w *promWriter) {
	m := s.metrics
	w.writeSummary("keel_recv_parse_us", "produce: request start to command built, microseconds", m.produceUs.snapshot(produceStageRecvParse), m.produceUs.sum(produceStageRecvParse))
	w.writeSummary("keel_queue_us", "produce: waiting for the Raft loop to take the command, microseconds", m.produceUs.snapshot(produceStageQueue), m.produceUs.sum(produceStageQueue))
	w.writeSummary("keel_server_us", "produce: request start to answer, microseconds", m.produceUs.snapshot(produceStageServer), m.produceUs.sum(produceStageServer))
	t := s.node.Timings()
	w.writeSummary("keel_fsync_us", "WAL write + fdatasync of one group commit, microseconds", t.FsyncUs, t.FsyncSumUs)
	w.writeSummary("keel_group_commit_requests", "requests made durable by one WAL fdatasync", t.GroupSize, t.GroupSum)
	w.writeSummary("keel_checkpoint_us", "state checkpoints from capture to WAL truncation (partition fsyncs and the state file run in the background), microseconds", t.CheckpointUs, t.CheckpointSumUs)
	// The same in seconds, as histograms (they aggregate across nodes).
	w.help("keel_produce_stage_seconds", "histogram", "produce stages: recv_parse (request start to command built), queue (waiting for the Raft loop), server (request start to answer), seconds")
	for i, stage := range []string{"recv_parse", "queue", "server"} {
		w.writeHDRHistogram("keel_produce_stage_seconds", []string{"stage", stage}, m.produceUs.snapshot(i), m.produceUs.sum(i))
	}
	w.help("keel_fsync_seconds", "histogram", "WAL write + fdatasync of one group commit, seconds")
	w.writeHDRHistogram("keel_fsync_seconds", nil, t.FsyncUs, t.FsyncSumUs)
}

func (s *Server) writeDataMetrics(w *promWriter) {
	topics := s.store.Topics()
	w.help("keel_partition_log_end_offset", "gauge", "next offset of each partition")
	for _, t := range topics {
		for _, p := range t.Partitions {
			w.sample("keel_partition_log_end_offset", []string{"topic", t.Name, "partition", itoa(uint64(p.ID))}, p.Log.NextOffset())
		}
	}
	w.help("keel_partition_log_start_offset", "gauge", "first stored offset of each partition")
	for _, t := range topics {
		for _, p := range t.Partitions {
			w.sample("keel_partition_log_start_offset", []string{"topic", t.Name, "partition", itoa(uint64(p.ID))}, p.Log.StartOffset())
		}
	}
	offsets := s.store.Offsets()
	sort.Slice(offsets, func(i, j int) bool {
		a, b := offsets[i], offsets[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && (a.Group < b.Group || a.Group == b.Group && a.Partition < b.Partition)
	})
	w.help("keel_group_committed_offset", "gauge", "last committed (processed) offset per group and partition")
	for _, o := range offsets {
		w.sample("keel_group_committed_offset", []string{"topic", o.Topic, "group", o.Group, "partition", itoa(uint64(o.Partition))}, o.Offset)
	}
	w.help("keel_group_lag", "gauge", "messages after the committed offset (after the log start for an assigned partition with no commit yet)")
	committed := map[offsetKeyLabel]bool{}
	for _, o := range offsets {
		committed[offsetKeyLabel{o.Topic, o.Group, o.Partition}] = true
		var lag uint64
		if t, ok := s.store.Topic(o.Topic); ok && int(o.Partition) < len(t.Partitions) {
			p := t.Partitions[o.Partition]
			lag = groupLag(p.Log.NextOffset(), p.Log.StartOffset(), o.Offset, true)
		}
		w.sample("keel_group_lag", []string{"topic", o.Topic, "group", o.Group, "partition", itoa(uint64(o.Partition))}, lag)
	}
	groups := s.store.Groups()
	for _, g := range groups {
		for _, m := range g.Members {
			t, ok := s.store.Topic(m.Topic)
			if !ok {
				continue
			}
			for _, pid := range m.Partitions {
				if committed[offsetKeyLabel{m.Topic, g.Name, pid}] || int(pid) >= len(t.Partitions) {
					continue
				}
				p := t.Partitions[pid]
				w.sample("keel_group_lag", []string{"topic", m.Topic, "group", g.Name, "partition", itoa(uint64(pid))}, groupLag(p.Log.NextOffset(), p.Log.StartOffset(), 0, false))
			}
		}
	}
	w.help("keel_group_members", "gauge", "members of each consumer group")
	for _, g := range groups {
		w.sample("keel_group_members", []string{"group", g.Name}, uint64(len(g.Members)))
	}
	w.help("keel_group_generation", "gauge", "each consumer group's generation (moves at every rebalance)")
	for _, g := range groups {
		w.sample("keel_group_generation", []string{"group", g.Name}, g.Generation)
	}
}

// offsetKeyLabel names a committed offset.
type offsetKeyLabel struct {
	topic, group string
	partition    int32
}

// promWriter appends the Prometheus text format.
type promWriter struct{ b []byte }

func (w *promWriter) help(name, typ, help string) {
	w.b = append(w.b, "# HELP "+name+" "+help+"\n# TYPE "+name+" "+typ+"\n"...)
}

func (w *promWriter) sample(name string, labels []string, v uint64) {
	w.b = append(w.b, name...)
	if len(labels) > 0 {
		w.b = append(w.b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, labels[i]...)
			w.b = append(w.b, '=', '"')
			w.b = append(w.b, promEscape.Replace(labels[i+1])...)
			w.b = append(w.b, '"')
		}
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ' ')
	w.b = strconv.AppendUint(w.b, v, 10)
	w.b = append(w.b, '\n')
}

// sampleFloat writes an unlabelled sample with a fractional value.
func (w *promWriter) sampleFloat(name string, v float64) {
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = strconv.AppendFloat(w.b, v, 'g', -1, 64)
	w.b = append(w.b, '\n')
}

var promEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func boolGauge(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
