package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A Raft entry carries a batch of commands from many requests:
//
//	entry   = version u8 (1) | leader time ms i64 LE | idempotency window
//	          ms i64 LE | idempotency keys max u32 LE | partitions max u32 LE |
//	          topics max u32 LE | command*
//	command = kind u8 | request id u64 LE | body length uvarint | body
//
// Bodies (strings and byte strings are uvarint length + bytes):
//
//	create  = topic | partitions uvarint
//	produce = topic | partition zigzag-varint (-1: the server chooses) |
//	          auto-create partitions uvarint (0: never) | partition key |
//	          idempotency key | message count uvarint | (key | value)*
//	commit  = topic | group | partition uvarint | offset uvarint
//	delete-before = topic | partition uvarint | offset uvarint | reason u8 |
//	          (retention reason only: ttl ms uvarint | max bytes uvarint,
//	          the policy the trim was computed under)
//	retention = topic ("*": every topic) | partition zigzag-varint (-1: all) |
//	          ttl ms zigzag-varint | max bytes zigzag-varint (for both:
//	          -1 unchanged, 0 cleared) | cleanup u8 (0 unchanged, else
//	          CleanupDelete + 1 or CleanupCompact + 1)
//	kv put  = namespace | key | value | cas given u8 | cas uvarint | ttl ms uvarint
//	kv delete = namespace | key | cas given u8 | cas uvarint
//	kv expire = namespace | count uvarint | (key | cas uvarint)*
//	group join = topic | group | member id | session timeout ms uvarint |
//	          strategy u8 (Strategy*)
//	group leave = "" | group | member id
//	group expire = "" | group | count uvarint | (member id | incarnation uvarint)*
//	member commit = topic | group | partition uvarint | offset uvarint |
//	          member id | generation uvarint
//
// The leader's clock and the limits that change what apply does are written
// into the entry, so that every replica, and a replay after a restart with
// other flags, makes the same decisions (idempotency window and key limit,
// partition limit, message timestamps).
//
// The version byte also names the apply rules the entry was proposed under,
// so a replay of an older entry decides as it did when it was first
// applied:
//   - 1: a commit at the log end offset is out of range; a produce to a
//     missing topic auto-creates it before its partition is checked.
//   - 2: a commit at the log end offset is accepted; a produce whose
//     partition an auto-created topic would not have is refused and
//     creates nothing; the header also carries the node-wide partition
//     and consumer-offset limits (8 more bytes).
const (
	entryVersion       = 2 // written by this build
	entryVersionMin    = 1 // oldest still applied
	entryHeaderBytesV1 = 29
	entryHeaderBytes   = 37
	commandHeaderMin   = 10
	commandsPerEntry   = 1 << 20 // sanity bound while decoding
	messagesPerCmdMax  = 1 << 20
)

// Command kinds; the values are in the Raft log: never renumber.
const (
	CmdCreateTopic  uint8 = 1
	CmdProduce      uint8 = 2
	CmdCommit       uint8 = 3
	CmdDeleteBefore uint8 = 4
	CmdRetention    uint8 = 5
	CmdKVPut        uint8 = 6
	CmdKVDelete     uint8 = 7
	CmdKVExpire     uint8 = 8
	CmdGroupJoin    uint8 = 9
	CmdGroupLeave   uint8 = 10
	CmdGroupExpire  uint8 = 11
	CmdMemberCommit uint8 = 12
)

// Reasons of a CmdDeleteBefore.
const (
	TrimByClient    uint8 = 0 // POST /broker/delete-before
	TrimByRetention uint8 = 1 // the leader's retention sweep (applies only while the policy it was computed under is in force)
	trimReasonMax         = TrimByRetention
)

// AllTopics names every topic in a CmdRetention (and the policy of topics
// created later).
const AllTopics = "*"

// MessageIn is one message of a produce command.
type MessageIn struct {
	Key   []byte
	Value []byte
}

// Command is one decoded state-machine command. Slices alias the entry.
type Command struct {
	Kind  uint8
	ReqID uint64

	Topic      string
	Partitions int // CmdCreateTopic

	Partition            int32 // CmdProduce: -1 = chosen by the server; CmdCommit
	AutoCreatePartitions int   // CmdProduce: create a missing topic with this many (0 = do not)
	PartitionKey         []byte
	IdempotencyKey       []byte
	Messages             []MessageIn

	Group  string // CmdCommit, CmdMemberCommit, CmdGroup*
	Offset uint64 // CmdCommit, CmdMemberCommit, CmdDeleteBefore

	MemberID   string      // CmdGroupJoin, CmdGroupLeave, CmdMemberCommit
	Generation uint64      // CmdMemberCommit: the generation the member holds
	Strategy   uint8       // CmdGroupJoin: Strategy*
	Expired    []MemberRef // CmdGroupExpire

	Reason   uint8 // CmdDeleteBefore: TrimBy*
	Cleanup  uint8 // CmdRetention: 0 unchanged, else the policy's Cleanup + 1
	TTLMs    int64 // CmdRetention: -1 unchanged, 0 cleared; CmdKVPut: time to live (0 = none); CmdDeleteBefore by retention: the policy's; CmdGroupJoin: the session timeout
	MaxBytes int64 // CmdRetention: -1 unchanged, 0 cleared; CmdDeleteBefore by retention: the policy's

	// CmdKVPut, CmdKVDelete (Topic is the namespace): the key, the value,
	// and the compare-and-set condition when HasCAS.
	KVKey   []byte
	KVValue []byte
	HasCAS  bool
	CAS     uint64
	// CmdKVExpire: keys to remove if they still hold this cas and are
	// past their TTL when the entry applies.
	KVExpired []KVVersion
}

// KVVersion is a key at one cas.
type KVVersion struct {
	Key []byte
	CAS uint64
}

var errCommand = errors.New("engine: malformed command")

// EntryLimits are the settings that change what apply does. The leader
// writes them into every entry.
type EntryLimits struct {
	Version             uint8 // apply rules of the entry (see entryVersion); set by DecodeEntryHeader, ignored by AppendEntryHeader
	IdempotencyWindowMs int64 // how long an idempotency key is remembered
	IdempotencyKeysMax  int   // at most this many keys, oldest dropped first
	PartitionsMax       int   // partitions a topic may have
	TopicsMax           int   // topics a node may hold (each partition holds open files)
	PartitionsTotalMax  int   // partitions of all topics together (each holds a file descriptor); 0 = no limit (version 1)
	OffsetsMax          int   // committed consumer offsets (topic, group, partition) stored; 0 = no limit (version 1)
}

// Defaults for EntryLimits.
const (
	PartitionsMaxDefault       = 1024
	TopicsMaxDefault           = 10_000
	IdempotencyWindowMsDefault = 24 * 60 * 60 * 1000
	IdempotencyKeysMaxDefault  = 1_000_000
	PartitionsTotalMaxDefault  = 10_000
	OffsetsMaxDefault          = 1_000_000
	partitionsLimit            = 1 << 16 // sanity bound when decoding
)

// WithDefaults fills zero fields with the defaults.
func (e EntryLimits) WithDefaults() EntryLimits {
	if e.IdempotencyWindowMs == 0 {
		e.IdempotencyWindowMs = IdempotencyWindowMsDefault
	}
	if e.IdempotencyKeysMax == 0 {
		e.IdempotencyKeysMax = IdempotencyKeysMaxDefault
	}
	if e.PartitionsMax == 0 {
		e.PartitionsMax = PartitionsMaxDefault
	}
	if e.TopicsMax == 0 {
		e.TopicsMax = TopicsMaxDefault
	}
	if e.PartitionsTotalMax == 0 {
		e.PartitionsTotalMax = PartitionsTotalMaxDefault
	}
	if e.OffsetsMax == 0 {
		e.OffsetsMax = OffsetsMaxDefault
	}
	return e
}

// AppendEntryHeader starts a Raft entry written at leader time nowMs under
// limits lim.
func AppendEntryHeader(dst []byte, nowMs int64, lim EntryLimits) []byte {
	dst = append(dst, entryVersion)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(nowMs))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(lim.IdempotencyWindowMs))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(lim.IdempotencyKeysMax))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(lim.PartitionsMax))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(lim.TopicsMax))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(lim.PartitionsTotalMax))
	return binary.LittleEndian.AppendUint32(dst, uint32(lim.OffsetsMax))
}

// AppendTo sets c's request id to reqID and appends c's encoding to dst:
// what replication asks of a command it proposes (replication.Command),
// without knowing its schema.
func (c *Command) AppendTo(dst []byte, reqID uint64) []byte {
	c.ReqID = reqID
	return AppendCommand(dst, c)
}

// AppendCommand appends the encoding of c to dst.
func AppendCommand(dst []byte, c *Command) []byte {
	dst = append(dst, c.Kind)
	dst = binary.LittleEndian.AppendUint64(dst, c.ReqID)
	body := commandBodyBytes(c)
	dst = binary.AppendUvarint(dst, uint64(body))
	start := len(dst)
	dst = appendString(dst, c.Topic)
	switch c.Kind {
	case CmdCreateTopic:
		dst = binary.AppendUvarint(dst, uint64(c.Partitions))
	case CmdProduce:
		dst = binary.AppendVarint(dst, int64(c.Partition))
		dst = binary.AppendUvarint(dst, uint64(c.AutoCreatePartitions))
		dst = appendBytes(dst, c.PartitionKey)
		dst = appendBytes(dst, c.IdempotencyKey)
		dst = binary.AppendUvarint(dst, uint64(len(c.Messages)))
		for _, m := range c.Messages {
			dst = appendBytes(dst, m.Key)
			dst = appendBytes(dst, m.Value)
		}
	case CmdCommit:
		dst = appendString(dst, c.Group)
		dst = binary.AppendUvarint(dst, uint64(c.Partition))
		dst = binary.AppendUvarint(dst, c.Offset)
	case CmdDeleteBefore:
		dst = binary.AppendUvarint(dst, uint64(c.Partition))
		dst = binary.AppendUvarint(dst, c.Offset)
		dst = append(dst, c.Reason)
		if c.Reason == TrimByRetention {
			dst = binary.AppendUvarint(dst, uint64(c.TTLMs))
			dst = binary.AppendUvarint(dst, uint64(c.MaxBytes))
		}
	case CmdRetention:
		dst = binary.AppendVarint(dst, int64(c.Partition))
		dst = binary.AppendVarint(dst, c.TTLMs)
		dst = binary.AppendVarint(dst, c.MaxBytes)
		dst = append(dst, c.Cleanup)
	case CmdKVPut, CmdKVDelete:
		dst = appendBytes(dst, c.KVKey)
		if c.Kind == CmdKVPut {
			dst = appendBytes(dst, c.KVValue)
		}
		dst = append(dst, boolByte(c.HasCAS))
		dst = binary.AppendUvarint(dst, c.CAS)
		if c.Kind == CmdKVPut {
			dst = binary.AppendUvarint(dst, uint64(c.TTLMs))
		}
	case CmdKVExpire:
		dst = binary.AppendUvarint(dst, uint64(len(c.KVExpired)))
		for _, v := range c.KVExpired {
			dst = appendBytes(dst, v.Key)
			dst = binary.AppendUvarint(dst, v.CAS)
		}
	case CmdGroupJoin:
		dst = appendString(dst, c.Group)
		dst = appendString(dst, c.MemberID)
		dst = binary.AppendUvarint(dst, uint64(c.TTLMs))
		dst = append(dst, c.Strategy)
	case CmdGroupLeave:
		dst = appendString(dst, c.Group)
		dst = appendString(dst, c.MemberID)
	case CmdGroupExpire:
		dst = appendString(dst, c.Group)
		dst = binary.AppendUvarint(dst, uint64(len(c.Expired)))
		for _, m := range c.Expired {
			dst = appendString(dst, m.ID)
			dst = binary.AppendUvarint(dst, m.Incarnation)
		}
	case CmdMemberCommit:
		dst = appendString(dst, c.Group)
		dst = binary.AppendUvarint(dst, uint64(c.Partition))
		dst = binary.AppendUvarint(dst, c.Offset)
		dst = appendString(dst, c.MemberID)
		dst = binary.AppendUvarint(dst, c.Generation)
	}
	if len(dst)-start != body {
		panic(fmt.Sprintf("engine: command body %d bytes, computed %d", len(dst)-start, body))
	}
	return dst
}

func commandBodyBytes(c *Command) int {
	n := bytesLen(len(c.Topic))
	switch c.Kind {
	case CmdCreateTopic:
		n += uvarintLen(uint64(c.Partitions))
	case CmdProduce:
		n += varintLen(int64(c.Partition)) + uvarintLen(uint64(c.AutoCreatePartitions))
		n += bytesLen(len(c.PartitionKey)) + bytesLen(len(c.IdempotencyKey))
		n += uvarintLen(uint64(len(c.Messages)))
		for _, m := range c.Messages {
			n += bytesLen(len(m.Key)) + bytesLen(len(m.Value))
		}
	case CmdCommit:
		n += bytesLen(len(c.Group)) + uvarintLen(uint64(c.Partition)) + uvarintLen(c.Offset)
	case CmdDeleteBefore:
		n += uvarintLen(uint64(c.Partition)) + uvarintLen(c.Offset) + 1
		if c.Reason == TrimByRetention {
			n += uvarintLen(uint64(c.TTLMs)) + uvarintLen(uint64(c.MaxBytes))
		}
	case CmdRetention:
		n += varintLen(int64(c.Partition)) + varintLen(c.TTLMs) + varintLen(c.MaxBytes) + 1
	case CmdKVPut:
		n += bytesLen(len(c.KVKey)) + bytesLen(len(c.KVValue)) + 1 + uvarintLen(c.CAS) + uvarintLen(uint64(c.TTLMs))
	case CmdKVDelete:
		n += bytesLen(len(c.KVKey)) + 1 + uvarintLen(c.CAS)
	case CmdKVExpire:
		n += uvarintLen(uint64(len(c.KVExpired)))
		for _, v := range c.KVExpired {
			n += bytesLen(len(v.Key)) + uvarintLen(v.CAS)
		}
	case CmdGroupJoin:
		n += bytesLen(len(c.Group)) + bytesLen(len(c.MemberID)) + uvarintLen(uint64(c.TTLMs)) + 1
	case CmdGroupLeave:
		n += bytesLen(len(c.Group)) + bytesLen(len(c.MemberID))
	case CmdGroupExpire:
		n += bytesLen(len(c.Group)) + uvarintLen(uint64(len(c.Expired)))
		for _, m := range c.Expired {
			n += bytesLen(len(m.ID)) + uvarintLen(m.Incarnation)
		}
	case CmdMemberCommit:
		n += bytesLen(len(c.Group)) + uvarintLen(uint64(c.Partition)) + uvarintLen(c.Offset)
		n += bytesLen(len(c.MemberID)) + uvarintLen(c.Generation)
	}
	return n
}

// DecodeEntryHeader returns the leader time, the limits and the commands
// that follow.
func DecodeEntryHeader(b []byte) (nowMs int64, lim EntryLimits, commands []byte, err error) {
	if len(b) < entryHeaderBytesV1 || b[0] < entryVersionMin || b[0] > entryVersion || b[0] >= 2 && len(b) < entryHeaderBytes {
		return 0, lim, nil, fmt.Errorf("%w: bad entry header", errCommand)
	}
	nowMs = int64(binary.LittleEndian.Uint64(b[1:9]))
	lim = EntryLimits{
		Version:             b[0],
		IdempotencyWindowMs: int64(binary.LittleEndian.Uint64(b[9:17])),
		IdempotencyKeysMax:  int(binary.LittleEndian.Uint32(b[17:21])),
		PartitionsMax:       int(binary.LittleEndian.Uint32(b[21:25])),
		TopicsMax:           int(binary.LittleEndian.Uint32(b[25:29])),
	}
	if b[0] == 1 {
		return nowMs, lim, b[entryHeaderBytesV1:], nil
	}
	lim.PartitionsTotalMax = int(binary.LittleEndian.Uint32(b[29:33]))
	lim.OffsetsMax = int(binary.LittleEndian.Uint32(b[33:37]))
	return nowMs, lim, b[entryHeaderBytes:], nil
}

// DecodeCommand decodes the command at the start of b into c (reusing
// c.Messages) and returns the bytes after it. intern, when not nil, turns
// the topic name into a string (the store returns the name it already
// holds, so applying a produce allocates no string).
func DecodeCommand(b []byte, c *Command, intern func([]byte) string) ([]byte, error) {
	if len(b) < commandHeaderMin {
		return nil, fmt.Errorf("%w: short header", errCommand)
	}
	msgs := c.Messages[:0]
	*c = Command{Kind: b[0], ReqID: binary.LittleEndian.Uint64(b[1:9]), Messages: msgs}
	bodyLen, n := binary.Uvarint(b[9:])
	if n <= 0 || n != uvarintLen(bodyLen) || bodyLen > uint64(len(b)-9-n) {
		return nil, fmt.Errorf("%w: body length", errCommand)
	}
	body := b[9+n : 9+n+int(bodyLen)]
	rest := b[9+n+int(bodyLen):]
	d := decoder{b: body}
	if topic := d.bytes(); intern != nil {
		c.Topic = intern(topic)
	} else {
		c.Topic = string(topic)
	}
	switch c.Kind {
	case CmdCreateTopic:
		c.Partitions = d.int()
	case CmdProduce:
		p := d.varint()
		if p < -1 || p > 1<<31-1 {
			d.fail()
		}
		c.Partition = int32(p)
		c.AutoCreatePartitions = d.int()
		c.PartitionKey = d.bytes()
		c.IdempotencyKey = d.bytes()
		count := d.uvarint()
		if count > messagesPerCmdMax || count > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < count && d.err == nil; i++ {
			c.Messages = append(c.Messages, MessageIn{Key: d.bytes(), Value: d.bytes()})
		}
	case CmdCommit:
		c.Group = string(d.bytes())
		p := d.uvarint()
		if p > 1<<31-1 {
			d.fail()
		}
		c.Partition = int32(p)
		c.Offset = d.uvarint()
	case CmdDeleteBefore:
		p := d.uvarint()
		if p > 1<<31-1 {
			d.fail()
		}
		c.Partition = int32(p)
		c.Offset = d.uvarint()
		if c.Reason = d.byte(); c.Reason > trimReasonMax {
			d.fail()
		}
		if c.Reason == TrimByRetention {
			c.TTLMs, c.MaxBytes = d.int64(), d.int64()
		}
	case CmdRetention:
		p := d.varint()
		if p < -1 || p > 1<<31-1 {
			d.fail()
		}
		c.Partition = int32(p)
		c.TTLMs, c.MaxBytes = d.varint(), d.varint()
		if c.TTLMs < -1 || c.MaxBytes < -1 {
			d.fail()
		}
		if c.Cleanup = d.byte(); c.Cleanup > CleanupCompact+1 {
			d.fail()
		}
	case CmdKVPut, CmdKVDelete:
		c.KVKey = d.bytes()
		if c.Kind == CmdKVPut {
			c.KVValue = d.bytes()
		}
		switch d.byte() {
		case 0:
		case 1:
			c.HasCAS = true
		default:
			d.fail()
		}
		c.CAS = d.uvarint()
		if !c.HasCAS && c.CAS != 0 {
			d.fail() // one encoding per command
		}
		if c.Kind == CmdKVPut {
			c.TTLMs = d.int64()
		}
	case CmdKVExpire:
		count := d.uvarint()
		if count > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < count && d.err == nil; i++ {
			c.KVExpired = append(c.KVExpired, KVVersion{Key: d.bytes(), CAS: d.uvarint()})
		}
	case CmdGroupJoin:
		c.Group, c.MemberID = string(d.bytes()), string(d.bytes())
		c.TTLMs = d.int64()
		if c.Strategy = d.byte(); c.Strategy > strategyMax {
			d.fail()
		}
	case CmdGroupLeave:
		c.Group, c.MemberID = string(d.bytes()), string(d.bytes())
	case CmdGroupExpire:
		c.Group = string(d.bytes())
		count := d.uvarint()
		if count > groupExpireBatchMax || count > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < count && d.err == nil; i++ {
			c.Expired = append(c.Expired, MemberRef{ID: string(d.bytes()), Incarnation: d.uvarint()})
		}
	case CmdMemberCommit:
		c.Group = string(d.bytes())
		p := d.uvarint()
		if p > 1<<31-1 {
			d.fail()
		}
		c.Partition = int32(p)
		c.Offset = d.uvarint()
		c.MemberID = string(d.bytes())
		c.Generation = d.uvarint()
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", errCommand, c.Kind)
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: kind %d body", errCommand, c.Kind)
	}
	return rest, nil
}

// decoder reads uvarint-framed fields; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCommand, nil }

// uvarint reads a minimally encoded uvarint: a padded one ("80 00" for 0)
// would decode to a value that re-encodes differently, so it is rejected.
func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != uvarintLen(v) {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 || n != varintLen(v) {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int64 reads a non-negative int64 stored as a uvarint.
func (d *decoder) int64() int64 {
	v := d.uvarint()
	if v > 1<<63-1 {
		d.fail()
		return 0
	}
	return int64(v)
}

func (d *decoder) byte() uint8 {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) int() int {
	v := d.uvarint()
	if v > 1<<31-1 {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func appendBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func bytesLen(n int) int { return uvarintLen(uint64(n)) + n }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}
