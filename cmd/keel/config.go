package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"keel/housekeeping"
)

// envNames returns the environment variables that may set a flag, in
// priority order: KEEL_<NAME>, then the older names.
func envNames(name string, aliases ...string) []string {
	return append([]string{"KEEL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}, aliases...)
}

// lookupEnv returns the first set variable of names.
func lookupEnv(names []string) (string, string, bool) {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v != "" {
			return n, v, true
		}
	}
	return "", "", false
}

// options are the settings of keel serve.
type options struct {
	port                 int
	host                 string
	data                 string
	tokens               string
	tokensFile           string
	pprofAllowRemote     bool
	insecureDevToken     bool
	rocket               bool
	autoCreateTopics     bool
	defaultPartitions    int
	maxPartitions        int
	maxTopics            int
	maxTotalPartitions   int
	maxConsumerOffsets   int
	topicCreateRate      float64
	readBuilders         int
	trustedProxies       string
	topicCreateBurst     int
	maxConns             int
	maxConnsPerIP        int
	sealedFilesMax       int
	maxMessageBytes      int
	maxBatchMessages     int
	maxBatchBytes        int
	idempotencyWindow    time.Duration
	idempotencyKeysMax   int
	checkpointBytes      int64
	checkpointInterval   time.Duration
	segmentBytes         int64
	maxKVValueBytes      int
	maxKVKeys            int
	queriesMax           int
	maxStreams           int
	streamKeepAlive      time.Duration
	streamWriteTimeout   time.Duration
	sessionCheck         time.Duration
	queryScanMax         int
	queryRowsMax         int
	queryGroupsMax       int
	queryBodyMax         int
	querySchemasMax      int
	queryScanBytesMax    int64
	queryTimeMax         time.Duration
	joinStateBytesMax    int64
	joinPairsMax         int64
	retentionInterval    time.Duration
	compactionInterval   time.Duration
	tombstoneRetention   time.Duration
	raftLogRetainBytes   int64
	haInsecurePlaintext  bool
	haJoin               bool
	defaultTimeout       time.Duration
	logLevel             string
	logFormat            string
	configFile           string
	printConfig          bool
	workers              int
	aof                  string
	haEnabled            bool
	haNodeID             string
	haNodes              string
	haBootstrapLeader    bool
	haWriteConcern       string
	haTLS                bool
	haTLSCA              string
	haTLSCert            string
	haTLSKey             string
	haHeartbeatMs        int
	haElectionTimeoutMs  int
	portSet              bool
	pprofAddr            string
	gcPercent            int
	memoryLimitMiB       int
	hostSet, tokensGiven bool
}

// flagSet defines every flag of serve with its environment variables and
// default, so --help documents all of them.
func flagSet(o *options) (*flag.FlagSet, func() error) {
	fs, _, validate := flagSetSources(o)
	return fs, validate
}

// flagSetSources is flagSet that also returns where each value came from
// (the environment, as each flag is defined; the file and the command
// line fill in later).
func flagSetSources(o *options) (*flag.FlagSet, configSources, func() error) {
	fs := flag.NewFlagSet("keel serve", flag.ContinueOnError)
	src := configSources{}
	var envErrs []string
	intVar := func(p *int, name string, def int, usage string, aliases ...string) {
		names := envNames(name, aliases...)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			x, err := strconv.Atoi(v)
			if err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: not an integer", n, v))
			}
			*p = x
		}
		fs.IntVar(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	int64Var := func(p *int64, name string, def int64, usage string) {
		names := envNames(name)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: not an integer", n, v))
			}
			*p = x
		}
		fs.Int64Var(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	strVar := func(p *string, name, def, usage string, aliases ...string) {
		names := envNames(name, aliases...)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			*p = v
		}
		fs.StringVar(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	boolVar := func(p *bool, name string, def bool, usage string, aliases ...string) {
		names := envNames(name, aliases...)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			x, err := strconv.ParseBool(v)
			if err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: not a boolean", n, v))
			}
			*p = x
		}
		fs.BoolVar(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	floatVar := func(p *float64, name string, def float64, usage string) {
		names := envNames(name)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: not a number", n, v))
			}
			*p = x
		}
		fs.Float64Var(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	durVar := func(p *time.Duration, name string, def time.Duration, usage string) {
		names := envNames(name)
		*p = def
		if n, v, ok := lookupEnv(names); ok {
			src[name] = "env " + n
			x, err := time.ParseDuration(v)
			if err != nil {
				envErrs = append(envErrs, fmt.Sprintf("%s=%q: not a duration", n, v))
			}
			*p = x
		}
		fs.DurationVar(p, name, *p, fmt.Sprintf("%s (env %s)", usage, strings.Join(names, ", ")))
	}
	intVar(&o.port, "port", 1109, "HTTP port", "PORT", "RF_PORT")
	strVar(&o.host, "host", "", "listen address (default 127.0.0.1 without tokens, 0.0.0.0 with)", "RF_HOST")
	strVar(&o.data, "data", "./data", "data directory, relative to the working directory", "RF_DATA_DIR")
	strVar(&o.tokens, "tokens", "", "bearer tokens: token, token@read|write|admin, token@rps:burst:daily; comma-separated", "RF_BEARER_TOKENS")
	strVar(&o.tokensFile, "tokens-file", "", "file of bearer tokens (one entry per line or comma-separated, # comments), added to --tokens; keeps them out of argv")
	boolVar(&o.insecureDevToken, "insecure-dev-token", false, "accept the 'dev' token on a non-loopback address")
	boolVar(&o.rocket, "rocket", false, "acknowledge writes before fsync (not durable)", "RF_ROCKET")
	boolVar(&o.autoCreateTopics, "auto-create-topics", true, "create a missing topic on first produce")
	intVar(&o.defaultPartitions, "default-partitions", 8, "partitions of an auto-created topic or a create without a count")
	intVar(&o.maxPartitions, "max-partitions", 1024, "most partitions a topic may have")
	intVar(&o.maxTopics, "max-topics", 10000, "most topics the node holds (every partition keeps files open)")
	intVar(&o.maxTotalPartitions, "max-total-partitions", 0, "most partitions of all topics together; each holds a file descriptor (0 = derived from ulimit -n)")
	intVar(&o.maxConsumerOffsets, "max-consumer-offsets", 1_000_000, "most committed consumer offsets (topic, group, partition) stored; about 100 bytes of memory each plus the group name")
	floatVar(&o.topicCreateRate, "topic-create-rate", 20, "new topics (explicit or auto-created) per second, node-wide; more wait their turn (429 if it comes after their timeout) (0 = no limit)")
	intVar(&o.topicCreateBurst, "topic-create-burst", 2, "new topics allowed at once above --topic-create-rate")
	intVar(&o.readBuilders, "read-builders", 0, "consume pages encoded at once; more reads wait for a slot (at most 5 s, then 503) (0 = one per CPU)")
	intVar(&o.maxConns, "max-conns", 0, "most client connections served at once; more are answered 503 and closed (0 = a quarter of ulimit -n, 64 to 10000)")
	intVar(&o.maxConnsPerIP, "max-conns-per-ip", 0, "most connections from one client address (IPv4, or IPv6 /64); loopback is exempt (0 = a quarter of --max-conns, at least 16)")
	strVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated addresses of proxies in front of the node; for their requests the client is the last X-Forwarded-For address (failed-token limit)")
	intVar(&o.sealedFilesMax, "sealed-files-max", 0, "most sealed segment files kept open; others are reopened on read (0 = an eighth of ulimit -n, 16 to 1024)")
	intVar(&o.maxMessageBytes, "max-message-bytes", 1<<20, "largest message (produce body or NDJSON line)", "RF_MAX_MESSAGE_BYTES")
	intVar(&o.maxBatchMessages, "max-batch-messages", 10000, "most lines in one NDJSON request")
	intVar(&o.maxBatchBytes, "max-batch-bytes", 4<<20, "largest NDJSON request body")
	durVar(&o.idempotencyWindow, "idempotency-window", 24*time.Hour, "how long an idempotency key is remembered")
	intVar(&o.idempotencyKeysMax, "idempotency-keys-max", 1_000_000, "most idempotency keys remembered (oldest dropped first)")
	int64Var(&o.checkpointBytes, "checkpoint-bytes", 64<<20, "WAL bytes between state checkpoints (bounds restart time)")
	durVar(&o.checkpointInterval, "checkpoint-interval", time.Minute, "longest time between state checkpoints while writes happen")
	intVar(&o.maxKVValueBytes, "max-kv-value-bytes", 1<<20, "largest KV value (put body)")
	intVar(&o.maxKVKeys, "max-kv-keys", 5_000_000, "most KV keys of all namespaces together; about 60 bytes of memory each plus the key (0 = no limit)")
	intVar(&o.maxStreams, "max-streams", 4096, "Server-Sent Events streams open at once (GET /broker/stream/...); more are refused with 503 too_many_streams (each holds a connection and about 40 KiB)")
	durVar(&o.streamKeepAlive, "stream-keepalive", 15*time.Second, "quiet time after which an event stream sends a keep-alive comment (keepalive_ms overrides it per stream)")
	durVar(&o.streamWriteTimeout, "stream-write-timeout", 30*time.Second, "an event stream whose reader takes nothing for this long is closed")
	durVar(&o.sessionCheck, "group-session-check-interval", housekeeping.SessionCheckIntervalDefault, "how often the leader looks for consumer group members silent past their session timeout (the most an expiry waits past it)")
	intVar(&o.queriesMax, "queries-max", 0, "stream queries and joins run at once, each on one CPU; more wait for a slot (at most 5 s, then 503) (0 = half the CPUs, at least 1)")
	intVar(&o.queryScanMax, "query-scan-max", 1_000_000, "most messages a query or join reads from one source per request (and its default limit)")
	int64Var(&o.queryScanBytesMax, "query-scan-bytes-max", 1<<30, "value bytes a query or join reads from one source per request; past it the scan stops early (stopped_by \"bytes\") and next_offset says where to go on")
	durVar(&o.queryTimeMax, "query-time-max", 30*time.Second, "how long a query or join reads; past it the scan stops early (stopped_by \"time\") and next_offset says where to go on")
	intVar(&o.queryRowsMax, "query-rows-max", 10_000, "most rows a query (emit_rows) or join (max_rows) returns")
	intVar(&o.queryGroupsMax, "query-groups-max", 100_000, "most aggregate groups (window x key) one query holds; past it, 413")
	intVar(&o.querySchemasMax, "query-schemas-max", 128, "compiled Avro and Protobuf schemas of queries kept, by the hash of their text (least recently used dropped)")
	intVar(&o.queryBodyMax, "query-body-max", 1<<20, "largest query or join body, inline schemas included")
	int64Var(&o.joinStateBytesMax, "join-state-bytes-max", 256<<20, "memory one join may hold for both sides (keys and the JSON it would emit); past it, 413")
	int64Var(&o.joinPairsMax, "join-pairs-max", 100_000_000, "most candidate pairs (same key, within the window) one join compares; past it, 413")
	int64Var(&o.segmentBytes, "segment-bytes", 64<<20, "size at which a partition's active segment is sealed and a new one begun; retention and delete-before free whole sealed segments (at least --max-message-bytes + 64 KiB, at most 1 GiB)")
	durVar(&o.compactionInterval, "compaction-interval", housekeeping.CompactionIntervalDefault, "how often each node compacts topics with cleanup compact and KV namespaces (sealed segments below the last state checkpoint)")
	durVar(&o.tombstoneRetention, "compaction-tombstone-retention", housekeeping.TombstoneRetentionDefault, "how long compaction keeps a key's tombstone (a record with the key and an empty value) once it is the key's newest")
	durVar(&o.retentionInterval, "retention-interval", housekeeping.RetentionIntervalDefault, "how often the leader checks partitions against their retention policies and trims whole expired or surplus segments (reads skip expired records in between)")
	int64Var(&o.raftLogRetainBytes, "raft-log-retain-bytes", 64<<20, "cluster: applied Raft entries kept in memory so a lagging follower catches up from the log; one further behind gets a snapshot")
	boolVar(&o.haInsecurePlaintext, "ha-insecure-plaintext", false, "cluster: allow node traffic without TLS on a raft address that is not loopback (anyone who reaches the port can then act as a node)", "RF_HA_INSECURE_PLAINTEXT")
	durVar(&o.defaultTimeout, "write-timeout", 30*time.Second, "how long a write waits for durability when timeout_ms is absent")
	strVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	strVar(&o.logFormat, "log-format", "text", "text (logfmt-style key=value) or json (one object per line)")
	strVar(&o.configFile, "config", "", "a TOML file of settings, each under its flag name (precedence: flag > env > file > default)")
	boolVar(&o.printConfig, "print-config", false, "print every effective setting and where it came from (flag, env, file, default), then exit")
	intVar(&o.workers, "workers", 0, "accepted for compatibility and ignored")
	strVar(&o.aof, "aof", "", "accepted for compatibility and ignored")
	intVar(&o.gcPercent, "gc-percent", 400, "Go GC target percentage (GOGC, when set, wins); higher means fewer collections on the request path")
	intVar(&o.memoryLimitMiB, "memory-limit-mib", 192, "soft memory limit for the Go heap in MiB (GOMEMLIMIT, when set, wins); the GC works harder near it; 0 = none")
	strVar(&o.pprofAddr, "pprof-addr", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off when empty")
	boolVar(&o.pprofAllowRemote, "pprof-allow-remote", false, "serve --pprof-addr on a non-loopback address (the profiles have no auth)")
	boolVar(&o.haEnabled, "ha", false, "cluster mode: replicate through Raft with the nodes of --ha-nodes", "RF_HA_ENABLED")
	strVar(&o.haNodeID, "ha-node-id", "", "this node's name in --ha-nodes", "RF_HA_NODE_ID")
	strVar(&o.haNodes, "ha-nodes", "", "the cluster: id:host:raft_port:priority, comma-separated (HTTP port = raft port + 1; this node's is --port when given)", "RF_HA_NODES")
	boolVar(&o.haJoin, "ha-join", false, "start with an empty data directory as a new member of a running cluster (after POST /ha/membership/add on its leader): do not bootstrap a configuration", "RF_HA_JOIN")
	boolVar(&o.haBootstrapLeader, "ha-bootstrap-leader", false, "on the first start of a new cluster, campaign at once instead of after an election timeout", "RF_HA_BOOTSTRAP_LEADER")
	strVar(&o.haWriteConcern, "ha-write-concern", "", "nodes that must have a write on disk before it is answered: 1..N or majority (default majority)", "RF_HA_WRITE_CONCERN")
	boolVar(&o.haTLS, "ha-tls", false, "mutual TLS between nodes (each certificate must name its node id)", "RF_HA_TLS")
	strVar(&o.haTLSCA, "ha-tls-ca", "", "the cluster CA's certificate (PEM), relative to the working directory", "RF_HA_TLS_CA")
	strVar(&o.haTLSCert, "ha-tls-cert", "", "this node's certificate (PEM)", "RF_HA_TLS_CERT")
	strVar(&o.haTLSKey, "ha-tls-key", "", "this node's private key (PEM)", "RF_HA_TLS_KEY")
	intVar(&o.haHeartbeatMs, "ha-heartbeat-ms", 0, "Raft heartbeat interval, one tick (0 = 50 ms)", "RF_HA_HEARTBEAT_MS")
	intVar(&o.haElectionTimeoutMs, "ha-election-timeout-ms", 0, "Raft election timeout; raft waits 1 to 2 times it (0 = 10 heartbeats)", "RF_HA_ELECTION_TIMEOUT_MS")
	validate := func() error {
		fs.Visit(func(f *flag.Flag) { src[f.Name] = sourceFlag })
		if len(envErrs) > 0 {
			return fmt.Errorf("environment: %s", strings.Join(envErrs, "; "))
		}
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "host":
				o.hostSet = true
			case "port":
				o.portSet = true
			}
		})
		if _, _, ok := lookupEnv(envNames("host", "RF_HOST")); ok {
			o.hostSet = true
		}
		if _, _, ok := lookupEnv(envNames("port", "PORT", "RF_PORT")); ok {
			o.portSet = true
		}
		return o.check()
	}
	return fs, src, validate
}

func (o *options) check() error {
	switch {
	case o.logFormat != "text" && o.logFormat != "json":
		return fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	case o.port < 0 || o.port > 65535:
		return fmt.Errorf("--port %d: want 0..65535", o.port)
	case o.maxMessageBytes < 1 || o.maxMessageBytes > 6<<20:
		return fmt.Errorf("--max-message-bytes %d: want 1..%d (one replicated entry holds 8 MiB)", o.maxMessageBytes, 6<<20)
	case o.maxBatchBytes < 1 || o.maxBatchBytes > 6<<20:
		return fmt.Errorf("--max-batch-bytes %d: want 1..%d (one replicated entry holds 8 MiB)", o.maxBatchBytes, 6<<20)
	case o.maxBatchMessages < 1 || o.maxBatchMessages > 100000:
		return fmt.Errorf("--max-batch-messages %d: want 1..100000", o.maxBatchMessages)
	case o.maxTopics < 1 || o.maxTopics > 1_000_000:
		return fmt.Errorf("--max-topics %d: want 1..1000000", o.maxTopics)
	case o.maxTotalPartitions < 0 || o.maxConns < 0 || o.maxConnsPerIP < 0 || o.sealedFilesMax < 0:
		return fmt.Errorf("--max-total-partitions, --max-conns, --max-conns-per-ip and --sealed-files-max must be 0 (derived) or more")
	case o.readBuilders < 0:
		return fmt.Errorf("--read-builders must be 0 (one per CPU) or more")
	case o.queriesMax < 0 || o.queryScanMax < 1 || o.queryRowsMax < 0 || o.queryGroupsMax < 1 || o.querySchemasMax < 1 || o.queryScanBytesMax < 1 || o.queryTimeMax <= 0 || o.queryBodyMax < 1024 || o.joinStateBytesMax < 1<<20 || o.joinPairsMax < 1:
		return fmt.Errorf("--queries-max must be 0 (derived) or more; --query-scan-max, --query-groups-max, --query-schemas-max and --join-pairs-max, --query-scan-bytes-max and --query-time-max at least 1; --query-rows-max 0 or more; --query-body-max at least 1024; --join-state-bytes-max at least 1 MiB")
	case o.maxStreams < 1 || o.streamKeepAlive < 100*time.Millisecond || o.streamWriteTimeout < time.Second || o.sessionCheck < 10*time.Millisecond || o.sessionCheck > 10*time.Second:
		return fmt.Errorf("--max-streams must be at least 1, --stream-keepalive at least 100ms, --stream-write-timeout at least 1s, --group-session-check-interval 10ms to 10s")
	case o.topicCreateRate < 0 || o.topicCreateBurst < 1:
		return fmt.Errorf("--topic-create-rate must be 0 (no limit) or more, --topic-create-burst at least 1")
	case o.maxConsumerOffsets < 1 || o.maxConsumerOffsets > math.MaxInt32 || o.maxTotalPartitions > math.MaxInt32 ||
		o.idempotencyKeysMax > math.MaxInt32 || o.maxTopics > math.MaxInt32:
		// They travel in every Raft entry as 32-bit numbers.
		return fmt.Errorf("--max-consumer-offsets must be 1 to %d; --max-total-partitions, --idempotency-keys-max and --max-topics at most that", math.MaxInt32)
	case o.maxPartitions < 1 || o.maxPartitions > 65536:
		return fmt.Errorf("--max-partitions %d: want 1..65536", o.maxPartitions)
	case o.defaultPartitions < 1 || o.defaultPartitions > o.maxPartitions:
		return fmt.Errorf("--default-partitions %d: want 1..--max-partitions (%d)", o.defaultPartitions, o.maxPartitions)
	case o.idempotencyKeysMax < 1 || o.idempotencyWindow <= 0:
		return fmt.Errorf("--idempotency-keys-max and --idempotency-window must be positive")
	case o.raftLogRetainBytes < 0:
		return fmt.Errorf("--raft-log-retain-bytes must be 0 or more")
	case o.checkpointBytes < 1<<20:
		return fmt.Errorf("--checkpoint-bytes %d: want at least 1 MiB", o.checkpointBytes)
	case o.gcPercent < -1 || o.memoryLimitMiB < 0:
		return fmt.Errorf("--gc-percent must be -1 (off) or more, --memory-limit-mib 0 or more")
	case o.defaultTimeout <= 0:
		return fmt.Errorf("--write-timeout must be positive")
	case o.haHeartbeatMs < 0 || o.haElectionTimeoutMs < 0:
		return fmt.Errorf("--ha-heartbeat-ms and --ha-election-timeout-ms must be 0 (default) or more")
	}
	return nil
}
