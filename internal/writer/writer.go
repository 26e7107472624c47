package writer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/kafkasec"
	"github.com/cdcd-dev/cdcd/kcop"
)

var terminal = fault.Terminal

// The ordering headers' keys, converted once: sarama only reads them.
var (
	headerTxn   = []byte(bookmark.HeaderTxn)
	headerPos   = []byte(bookmark.HeaderPos)
	headerOp    = []byte(bookmark.HeaderOp)
	headerGroup = []byte(bookmark.HeaderGroup)
	headerCount = []byte(bookmark.HeaderCount)
)

// Config configures a Writer.
type Config struct {
	Brokers         []string
	ClientID        string
	TransactionalID string
	CommitTopic     string
	// Source identifies the captured source in commit records; a commit stream belongs to one.
	Source string
	// Lineage is the source's line of history, recorded with each commit record's Resume.
	Lineage string
	// A commit group (one Kafka transaction) closes, between source transactions, once it holds
	// MaxGroupRecords records or MaxGroupBytes bytes, or MaxGroupDelay after it began.
	MaxGroupRecords int
	MaxGroupBytes   int64
	MaxGroupDelay   time.Duration
	// TransactionTimeout is the Kafka transaction timeout; a single source transaction must be
	// written within it (the broker caps it at transaction.max.timeout.ms).
	TransactionTimeout time.Duration
	// MaxMessageBytes is the largest record the writer sends; a larger one stops it with an error.
	MaxMessageBytes int
	// Linger is how long a producer lets a partition's batch fill (up to 1 MiB) while no commit
	// waits for it; 0 sends it as soon as its broker has no request in flight.
	Linger time.Duration
	// Compression is the codec of every record batch the writer sends (data and commit records),
	// at the codec's default level. Kafka keeps the batches as they come (a topic's compression.type
	// of producer, its default).
	Compression sarama.CompressionCodec
	// TopicPartitions applies to the data topics cdcd creates; ReplicationFactor and
	// MinInsyncReplicas to those and to the commit topic. ReplicationFactor 0 is the smaller of 3
	// and the number of brokers, -1 the brokers' default; MinInsyncReplicas 0 is one less than the
	// replication factor (at least 1), -1 the brokers' default.
	TopicPartitions   int32
	ReplicationFactor int16
	MinInsyncReplicas int16
	Timeout           time.Duration
	// Security is the connection's TLS and SASL settings, for every client the writer opens.
	Security kafkasec.Settings
	// Parallel selects the parallel delivery mode: data records go through ParallelProducers
	// idempotent producers without Kafka transactions (each partition always through the same one),
	// and only the commit stream record is written transactionally, after every data record of its
	// group is acknowledged. Orphans and duplicates that a crash leaves in the data topics are then
	// dropped by the tcc, which alone gives exactly-once in this mode.
	Parallel          bool
	ParallelProducers int
	Logger            *slog.Logger
	Observer          Observer
}

// Observer receives the writer's counts, for metrics. Calls come from the writer's goroutines.
type Observer interface {
	// Change counts one change of table (one *change.Table per table shape) and its records.
	Change(table *change.Table, op change.Op, records int, bytes int)
	Transaction()
	KafkaCommit(records int, took time.Duration)
	// Visible is how long after its source commit a transaction became visible in Kafka.
	Visible(after time.Duration)
	KafkaAbort()
}

type nopObserver struct{}

func (nopObserver) Change(*change.Table, change.Op, int, int) {}
func (nopObserver) Transaction()                              {}
func (nopObserver) KafkaCommit(int, time.Duration)            {}
func (nopObserver) Visible(time.Duration)                     {}
func (nopObserver) KafkaAbort()                               {}

// Writer is the transactional Kafka writer. It is the KCOP stage's kcop.Sink (and takes capture
// progress): each source transaction's records, stamped with ordering headers, go inside a Kafka
// transaction that holds one or more whole source transactions and ends with a commit stream record
// naming them. Only after Kafka has committed that transaction does OnDurable hear of the group's
// last position, so the source is never confirmed past data Kafka could still lose.
//
// A source transaction is never split across Kafka transactions: a large one keeps its Kafka
// transaction open, with its records already sent, until its commit. Memory stays bounded by the
// producer's buffers whatever the transaction's size; its duration is bounded by TransactionTimeout.
// After a crash, the open Kafka transaction is aborted by the next writer with the same transactional
// id (fencing the old one), so read_committed consumers never see a partial or repeated transaction.
type Writer struct {
	cfg      Config
	log      *slog.Logger
	obs      Observer
	client   sarama.Client
	admin    sarama.ClusterAdmin
	producer *txnProducer           // transactional: all records in transactional mode, commit records in both
	data     []sarama.AsyncProducer // the producers of data records in parallel mode
	parts    map[string]int32       // partition counts of data topics, for partitioning
	last     *bookmark.CommitRecord

	// OnDurable is called, on the goroutine that closed the group, with the Resume position of each
	// commit group once Kafka has committed it.
	OnDurable func(resume string)

	mu sync.Mutex // guards everything below; taken by the handler calls and the group timer
	// the open commit group
	open         bool
	group        uint64
	groupTxns    []bookmark.TxnEntry
	groupRecords int
	groupBytes   int64
	groupStart   time.Time
	// commitBytes estimates the size of the open group's commit record.
	commitBytes int
	// progress is a source position past the group's last transaction (or past the last group)
	// that held nothing to write; "" when the last transaction's End is the latest position.
	progress      string
	lastCommitted time.Time
	// state is the source's latest Commit.State, which every commit record carries.
	state string
	// txnStarted is when the open Kafka transaction began (unix nanoseconds, 0 when none is open),
	// to tell a transaction the coordinator aborted for its timeout from a fenced producer.
	txnStarted atomic.Int64
	ranges     map[topicPartition]*bookmark.Range // guarded by rangesMu (the ack drainer writes it)
	rangesMu   sync.Mutex
	// rangesBytes is rangeSize of each of ranges, summed; guarded by rangesMu.
	rangesBytes int
	// the source transaction in progress
	inTxn      bool
	txn        *change.Txn
	txnRecords int64
	// txnIDText and posText are the transaction's id and position as header values, groupText the
	// open group's number: made once, shared by all their records' headers.
	txnIDText, posText, groupText []byte
	pending                       []kcop.Record // the last change's records, held back until the next change or the commit
	pendingOp                     int64
	pendingSize                   int
	topics                        map[string]bool

	inflight atomic.Int64
	zero     chan struct{}
	asyncMu  sync.Mutex
	asyncErr error
	failedCh chan struct{} // closed with the first asynchronous error
	drained  chan struct{} // one value per producer whose acknowledgements are drained
	stopTick chan struct{}
	tickDone chan struct{}
}

type topicPartition struct {
	topic     string
	partition int32
}

var (
	_ kcop.Sink          = (*Writer)(nil)
	_ capture.Progresser = (*Writer)(nil)
)

// progressInterval is how often at most a commit record without transactions is written to make a
// position durable that the source passed without anything to write.
const progressInterval = time.Second

// defaults fills what c leaves zero with cdcd's defaults, which config.Default holds (Linger
// excepted: 0 is a setting of its own).
func (c *Config) defaults() {
	d := config.Default().Kafka
	if c.MaxGroupRecords <= 0 {
		c.MaxGroupRecords = d.GroupMaxRecords
	}
	if c.MaxGroupBytes <= 0 {
		c.MaxGroupBytes = d.GroupMaxBytes
	}
	if c.MaxGroupDelay <= 0 {
		c.MaxGroupDelay = d.GroupMaxDelay
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = d.TransactionTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.TopicPartitions <= 0 {
		c.TopicPartitions = d.TopicPartitions
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.ParallelProducers <= 0 {
		c.ParallelProducers = d.ParallelProducers
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Open connects to Kafka, makes sure the commit topic exists with one partition, starts the
// transactional producer (which fences any earlier writer with the same transactional id and aborts
// its open transaction) and reads the last commit stream record.
func Open(ctx context.Context, cfg Config) (*Writer, error) {
	cfg.defaults()
	w := &Writer{cfg: cfg, log: cfg.Logger.With("component", "writer"), obs: cfg.Observer,
		ranges: map[topicPartition]*bookmark.Range{}, topics: map[string]bool{}, parts: map[string]int32{},
		zero: make(chan struct{}, 1), failedCh: make(chan struct{}), stopTick: make(chan struct{}), tickDone: make(chan struct{})}
	if w.obs == nil {
		w.obs = nopObserver{}
	}
	// Every client gets the same security settings, their files read once.
	applySecurity, err := SaramaSecurity(cfg.Security)
	if err != nil {
		return nil, err
	}
	secure := func(sc *sarama.Config) *sarama.Config {
		applySecurity(sc)
		return sc
	}
	kgoSecurity, err := cfg.Security.Kgo()
	if err != nil {
		return nil, err
	}
	if w.client, err = sarama.NewClient(cfg.Brokers, secure(baseConfig(cfg.ClientID, cfg.Timeout))); err != nil {
		return nil, fmt.Errorf("connecting to Kafka at %v (%s): %w (check kafka.brokers)", cfg.Brokers, cfg.Security, ExplainSarama(cfg.Security, err))
	}
	if w.admin, err = sarama.NewClusterAdminFromClient(w.client); err != nil {
		w.client.Close()
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	w.resolveReplication()
	if err := w.ensureCommitTopic(); err != nil {
		w.admin.Close()
		return nil, err
	}
	if w.producer, err = newTxnProducer(w.client, cfg.TransactionalID, cfg.TransactionTimeout, cfg.Timeout, min(cfg.MaxMessageBytes, 1<<20), cfg.Linger, w.acked,
		func(err error) { w.setAsyncErr(w.kafkaError("writing to Kafka", err)) }); err != nil {
		w.admin.Close()
		return nil, w.kafkaError(fmt.Sprintf("starting the transactional producer %q", cfg.TransactionalID), err)
	}
	w.producer.alsoAdd = topicPartition{cfg.CommitTopic, 0}
	w.producer.codec = cfg.Compression
	if cfg.Parallel {
		for range cfg.ParallelProducers {
			dc := dataConfig(secure(producerConfig(cfg.ClientID, "", cfg.Timeout)), cfg.MaxMessageBytes, cfg.Linger)
			dc.Producer.Compression = cfg.Compression
			p, err := sarama.NewAsyncProducer(cfg.Brokers, dc)
			if err != nil {
				w.shutdownProducer()
				w.admin.Close()
				return nil, fmt.Errorf("starting an idempotent producer: %w", err)
			}
			w.data = append(w.data, p)
		}
	}
	if w.last, err = readLastCommit(ctx, cfg.Brokers, kgoSecurity, w.client, cfg.CommitTopic, cfg.Timeout); err != nil {
		w.shutdownProducer()
		w.admin.Close()
		return nil, err
	}
	if w.last != nil {
		if w.last.Source != cfg.Source {
			w.shutdownProducer()
			w.admin.Close()
			return nil, terminal("commit topic %s belongs to source %q, not %q: give this source its own kafka.commit_topic", cfg.CommitTopic, w.last.Source, cfg.Source)
		}
		w.group, w.state = w.last.Group, w.last.State
	}
	w.drained = make(chan struct{}, len(w.data))
	for _, p := range w.data {
		go w.drain(p)
	}
	go w.tick()
	return w, nil
}

// CompressionCodec is the codec Kafka calls name: none, gzip, snappy, lz4 or zstd.
func CompressionCodec(name string) (sarama.CompressionCodec, error) {
	var c sarama.CompressionCodec
	if err := c.UnmarshalText([]byte(name)); err != nil {
		return 0, fmt.Errorf("kafka.compression: %w", err)
	}
	return c, nil
}

// dataConfig sets what a producer of data records in parallel mode needs beyond producerConfig:
// cdcd's partitioner (the Java client's, so keys land where Kafka Streams and Connect would put
// them), the record size limit, and batching that fills requests up to 1 MiB or for linger.
func dataConfig(pc *sarama.Config, maxMessageBytes int, linger time.Duration) *sarama.Config {
	pc.Producer.MaxMessageBytes = maxMessageBytes
	pc.Producer.Partitioner = sarama.NewManualPartitioner // route has placed every record (partitionOf)
	if linger > 0 {
		pc.Producer.Flush.Bytes = 1 << 20
		pc.Producer.Flush.Frequency = linger
	} else {
		// sarama flushes as soon as it can only when no trigger is set: a byte trigger alone
		// would hold records until a megabyte had gathered.
		pc.Producer.Flush.Bytes, pc.Producer.Flush.Frequency = 0, 0
	}
	pc.Producer.Flush.MaxMessages = 0
	pc.ChannelBufferSize = 4096
	return pc
}

// Resume is the source position to continue after ("" when the commit stream is empty).
func (w *Writer) Resume() string {
	if w.last == nil {
		return ""
	}
	return w.last.Resume
}

// Last is the last commit stream record, nil when there is none.
func (w *Writer) Last() *bookmark.CommitRecord { return w.last }

func (w *Writer) ensureCommitTopic() error {
	topics, err := w.admin.DescribeTopics([]string{w.cfg.CommitTopic})
	if err != nil {
		return fmt.Errorf("describing the commit topic %s: %w", w.cfg.CommitTopic, err)
	}
	if len(topics) == 1 && topics[0].Err == sarama.ErrNoError {
		if n := len(topics[0].Partitions); n != 1 {
			return terminal("commit topic %s has %d partitions; the commit stream needs exactly 1 (choose another kafka.commit_topic)", w.cfg.CommitTopic, n)
		}
		problems, err := commitTopicProblems(w.admin, w.cfg.CommitTopic)
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			return terminal("commit topic %s would lose commit records, and with them whole transactions: %s", w.cfg.CommitTopic, strings.Join(problems, "; "))
		}
		return nil
	}
	err = w.admin.CreateTopic(w.cfg.CommitTopic, &sarama.TopicDetail{
		NumPartitions: 1, ReplicationFactor: w.cfg.ReplicationFactor, ConfigEntries: w.withMinISR(commitTopicConfig()),
	}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("creating the commit topic %s: %w", w.cfg.CommitTopic, err)
	}
	w.log.Info("created commit topic", "topic", w.cfg.CommitTopic)
	return nil
}

func ptr[T any](v T) *T { return &v }

// resolveReplication turns the automatic replication settings into numbers for this cluster: a
// replicated cluster gets replicated topics without anyone asking.
func (w *Writer) resolveReplication() {
	if w.cfg.ReplicationFactor == 0 {
		w.cfg.ReplicationFactor = int16(max(1, min(3, len(w.client.Brokers()))))
	}
	if w.cfg.MinInsyncReplicas == 0 {
		w.cfg.MinInsyncReplicas = -1
		if w.cfg.ReplicationFactor > 0 {
			w.cfg.MinInsyncReplicas = max(1, w.cfg.ReplicationFactor-1)
		}
	}
	w.log.Info("topics cdcd creates", "replication_factor", w.cfg.ReplicationFactor, "min_insync_replicas", w.cfg.MinInsyncReplicas)
}

// withMinISR adds min.insync.replicas to a new topic's configuration, unless it is the brokers'.
func (w *Writer) withMinISR(m map[string]*string) map[string]*string {
	if w.cfg.MinInsyncReplicas > 0 {
		m["min.insync.replicas"] = ptr(strconv.Itoa(int(w.cfg.MinInsyncReplicas)))
	}
	return m
}

func (w *Writer) ensureTopic(topic string) error {
	if w.topics[topic] {
		return nil
	}
	err := w.admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: w.cfg.TopicPartitions, ReplicationFactor: w.cfg.ReplicationFactor,
		ConfigEntries: w.withMinISR(map[string]*string{})}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		var te *sarama.TopicError
		if !errors.As(err, &te) || te.Err != sarama.ErrTopicAlreadyExists {
			return fmt.Errorf("creating topic %s: %w", topic, err)
		}
	}
	w.topics[topic] = true
	return nil
}

// Begin implements capture.Handler.
func (w *Writer) Begin(ctx context.Context, txn *change.Txn) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failed(); err != nil {
		return err
	}
	if w.inTxn {
		return fmt.Errorf("writer: transaction %s began inside transaction %s", txn.ID, w.txn.ID)
	}
	if err := w.openGroup(); err != nil {
		return err
	}
	w.inTxn, w.txn, w.txnRecords = true, txn, 0
	w.txnIDText, w.posText = []byte(txn.ID), []byte(txn.Position)
	return nil
}

// openGroup begins a commit group, and in transactional mode its Kafka transaction, unless one is
// open. Called with mu held.
func (w *Writer) openGroup() error {
	if w.open {
		return nil
	}
	if !w.cfg.Parallel {
		if err := w.producer.BeginTxn(); err != nil {
			return w.kafkaError("beginning a Kafka transaction", err)
		}
		w.txnStarted.Store(time.Now().UnixNano())
	}
	w.open, w.groupStart, w.commitBytes = true, time.Now(), commitRecordBase+len(w.state)
	w.group++
	w.groupText = strconv.AppendUint(nil, w.group, 10)
	return nil
}

// Progress implements capture.Progresser: end (with the source's state there) is durable once a
// commit record carries it, in the next group or, while the source stays quiet, in a commit record
// of its own.
func (w *Writer) Progress(ctx context.Context, end, state string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failed(); err != nil {
		return err
	}
	if w.inTxn {
		return fmt.Errorf("writer: progress to %s inside transaction %s", end, w.txn.ID)
	}
	w.progress = end
	w.commitBytes += len(state) - len(w.state)
	w.state = state
	return nil
}

// Records implements kcop.Sink: the records the KCOP stage made of change c.
func (w *Writer) Records(ctx context.Context, c *change.Change, recs []kcop.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failed(); err != nil {
		return err
	}
	if !w.inTxn {
		return fmt.Errorf("writer: change outside a transaction")
	}
	failpoint.Hit(ctx, "writer.change")
	size, err := w.recordsSize(c.Txn, func() string { return fmt.Sprintf("%v of %s", c.Op, c.Table.QualifiedName()) }, c.Index, recs)
	if err != nil {
		return err
	}
	if err := w.flushPending(ctx, false, 0); err != nil {
		return err
	}
	w.obs.Change(c.Table, c.Op, len(recs), size)
	// Hold this change's records back until we know whether it is the transaction's last.
	w.pending = recs
	w.pendingOp, w.pendingSize = c.Index, size
	return nil
}

// recordsSize is the bytes recs take, or a terminal error when one is over the record size limit;
// what names the change in that error (it is only formatted then).
func (w *Writer) recordsSize(txn *change.Txn, what func() string, op int64, recs []kcop.Record) (int, error) {
	size := 0
	for i := range recs {
		n := len(recs[i].Key) + len(recs[i].Value) + 64
		for _, h := range recs[i].Headers {
			n += len(h.Key) + len(h.Value)
		}
		if n > w.cfg.MaxMessageBytes {
			return 0, terminal("a record for %s in transaction %s (op %d) is %d bytes, over kafka.max_message_bytes (%d): raise kafka.max_message_bytes and the topic's max.message.bytes (broker message.max.bytes) together, or leave the large column out; nothing was confirmed to the source",
				what(), txn.ID, op, n, w.cfg.MaxMessageBytes)
		}
		size += n
	}
	return size, nil
}

// Commit implements kcop.Sink: closing holds the records that close the transaction (a
// transaction-level alert); they follow the last change's records.
func (w *Writer) Commit(ctx context.Context, c *change.Commit, closing []kcop.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failed(); err != nil {
		return err
	}
	if !w.inTxn {
		return fmt.Errorf("writer: commit outside a transaction")
	}
	if len(closing) > 0 && c.Changes > 0 {
		// Records that close the transaction follow its last change's, under its op index.
		size, err := w.recordsSize(c.Txn, func() string { return "its commit" }, -1, closing)
		if err != nil {
			return err
		}
		w.pending = append(w.pending, closing...)
		w.pendingSize += size
	}
	if err := w.flushPending(ctx, true, c.Changes); err != nil {
		return err
	}
	e := bookmark.TxnEntry{ID: c.Txn.ID, Position: c.Txn.Position, End: c.End, Changes: c.Changes, Records: w.txnRecords, Snapshot: c.Txn.Snapshot}
	if cp := c.Txn.Copy; cp != nil {
		e.Copy = &bookmark.Copy{Table: cp.Table, Chunk: cp.Chunk, Rows: cp.Rows, Complete: cp.Complete}
	}
	w.commitBytes += len(c.State) - len(w.state)
	w.state = c.State
	if !c.Txn.CommitTime.IsZero() {
		e.CommitMillis = c.Txn.CommitTime.UnixMilli()
	}
	w.groupTxns = append(w.groupTxns, e)
	w.commitBytes += entrySize(&e)
	w.progress = "" // this transaction's End is later
	w.inTxn, w.txn = false, nil
	w.obs.Transaction()
	if w.groupRecords >= w.cfg.MaxGroupRecords || w.groupBytes >= w.cfg.MaxGroupBytes || time.Since(w.groupStart) >= w.cfg.MaxGroupDelay ||
		w.commitBytes+w.rangesSize() >= w.maxCommitBytes() {
		return w.closeGroup(ctx)
	}
	return nil
}

// commitRecordBase bounds the size of a commit record's fields besides its transactions and ranges.
const commitRecordBase = 512

// entrySize is the size of e in a commit record: its JSON and a separating comma.
func entrySize(e *bookmark.TxnEntry) int {
	b, _ := json.Marshal(e)
	return len(b) + 1
}

// rangeSize estimates the size of one range of a commit record.
func rangeSize(topic string) int { return len(topic) + 96 }

// rangesSize estimates the size of the open group's ranges in its commit record.
func (w *Writer) rangesSize() int {
	w.rangesMu.Lock()
	defer w.rangesMu.Unlock()
	return w.rangesBytes
}

// maxCommitBytes is where a group closes for the size of its commit record: three quarters of the
// record size limit, leaving room for the ranges of records still unacknowledged and for the
// entry of the transaction that crosses it.
func (w *Writer) maxCommitBytes() int { return w.cfg.MaxMessageBytes / 4 * 3 }

// outgoing is one record on its way to sarama: its message, its key and value as encoders and its
// headers, in one allocation instead of four.
type outgoing struct {
	msg        sarama.ProducerMessage
	key, value sarama.ByteEncoder
	headers    [6]sarama.RecordHeader
}

// flushPending sends the held-back records of the previous change, marking them as the
// transaction's last when last is set.
func (w *Writer) flushPending(ctx context.Context, last bool, count int64) error {
	if len(w.pending) == 0 {
		return nil
	}
	firstOp := strconv.AppendInt(nil, w.pendingOp, 10)
	group, txnID, pos := w.groupText, w.txnIDText, w.posText
	var countText []byte
	if last {
		countText = []byte(strconv.FormatInt(count, 10))
	}
	for i := range w.pending {
		r := &w.pending[i]
		// The records of one change are told apart, in the KCOP's order, by a suffix: "7", "7.1", ...
		op := firstOp
		if i > 0 {
			op = strconv.AppendInt(append(append([]byte{}, firstOp...), '.'), int64(i), 10)
		}
		if err := w.ensureTopic(r.Topic); err != nil {
			return err
		}
		if w.cfg.Parallel {
			o := &outgoing{}
			msg := &o.msg
			msg.Topic, msg.Partition, msg.Headers = r.Topic, r.Partition, w.headers(o.headers[:0], r, txnID, pos, op, group, countText)
			if r.Key != nil {
				o.key = r.Key
				msg.Key = &o.key
			}
			if r.Value != nil {
				o.value = r.Value
				msg.Value = &o.value
			}
			p, err := w.route(msg, r.Key)
			if err != nil {
				return err
			}
			if err := w.send(ctx, p, msg); err != nil {
				return err
			}
			continue
		}
		partition, err := w.partitionOf(r.Topic, r.Partition, r.Key)
		if err != nil {
			return err
		}
		pr := w.producer.newRecord()
		pr.rec.Key, pr.rec.Value = r.Key, r.Value
		pr.setHeaders(w.headers(pr.headers[:0], r, txnID, pos, op, group, countText))
		w.inflight.Add(1)
		if err := w.producer.Send(topicPartition{r.Topic, partition}, pr); err != nil {
			w.inflight.Add(-1)
			return w.kafkaError(fmt.Sprintf("writing to %s", r.Topic), err)
		}
	}
	w.txnRecords += int64(len(w.pending))
	w.groupRecords += len(w.pending)
	w.groupBytes += int64(w.pendingSize)
	w.pending = w.pending[:0]
	return nil
}

// headers appends a record's headers to hs: the KCOP's, then cdcd's ordering headers.
func (w *Writer) headers(hs []sarama.RecordHeader, r *kcop.Record, txnID, pos, op, group, countText []byte) []sarama.RecordHeader {
	if n := len(r.Headers) + 5; n > cap(hs) {
		hs = make([]sarama.RecordHeader, 0, n)
	}
	for _, h := range r.Headers {
		hs = append(hs, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	hs = append(hs,
		sarama.RecordHeader{Key: headerTxn, Value: txnID},
		sarama.RecordHeader{Key: headerPos, Value: pos},
		sarama.RecordHeader{Key: headerOp, Value: op},
		sarama.RecordHeader{Key: headerGroup, Value: group})
	if countText != nil {
		hs = append(hs, sarama.RecordHeader{Key: headerCount, Value: countText})
	}
	return hs
}

// partitions is how many partitions topic has, from the client's metadata, fetched on first use. A
// topic just created may take a moment to appear there; until it does, keys cannot be placed.
func (w *Writer) partitions(topic string) (int32, error) {
	if n, ok := w.parts[topic]; ok {
		return n, nil
	}
	deadline := time.Now().Add(w.cfg.Timeout)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		ps, err := w.client.Partitions(topic)
		if err == nil && len(ps) > 0 {
			w.parts[topic] = int32(len(ps))
			return int32(len(ps)), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("finding the partitions of %s: %w", topic, cmp.Or(err, errors.New("the metadata lists none")))
		}
		time.Sleep(backoff)
		_ = w.client.RefreshMetadata(topic)
	}
}

// partitionOf is where a record goes: the partition it names, or the Java client's murmur2 of its
// key (so keys land where Kafka Streams and Connect would put them), or any partition for a record
// without a key.
func (w *Writer) partitionOf(topic string, partition int32, key []byte) (int32, error) {
	n, err := w.partitions(topic)
	if err != nil {
		return 0, err
	}
	if partition >= n { // partitions may have been added since
		delete(w.parts, topic)
		_ = w.client.RefreshMetadata(topic)
		if n, err = w.partitions(topic); err != nil {
			return 0, err
		}
	}
	switch {
	case partition >= n:
		return 0, terminal("a record names partition %d of %s, which has %d: correct the KCOP's partition, or add partitions to the topic", partition, topic, n)
	case partition >= 0:
		return partition, nil
	case key == nil:
		return rand.Int32N(n), nil
	}
	return murmur2Partition(key, n), nil
}

// route fixes a data record's partition in parallel mode (as partitionOf does in transactional
// mode) and picks its producer, so that a partition's records always go through the same producer
// and stay in order.
func (w *Writer) route(msg *sarama.ProducerMessage, key []byte) (sarama.AsyncProducer, error) {
	p, err := w.partitionOf(msg.Topic, msg.Partition, key)
	if err != nil {
		return nil, err
	}
	msg.Partition = p
	h := uint32(p)
	for _, c := range []byte(msg.Topic) {
		h = h*31 + uint32(c)
	}
	return w.data[h%uint32(len(w.data))], nil
}

func (w *Writer) send(ctx context.Context, p sarama.AsyncProducer, msg *sarama.ProducerMessage) error {
	w.inflight.Add(1)
	select {
	case p.Input() <- msg: // sarama's input is buffered, so this usually succeeds without a full select
		return nil
	default:
	}
	select {
	case p.Input() <- msg:
		return nil
	case <-ctx.Done():
		w.inflight.Add(-1)
		return ctx.Err()
	}
}

// drain collects a producer's acknowledgements: the offsets of the group's records, and the first
// error.
func (w *Writer) drain(p sarama.AsyncProducer) {
	defer func() { w.drained <- struct{}{} }()
	succ, errs := p.Successes(), p.Errors()
	for succ != nil || errs != nil {
		select {
		case m, ok := <-succ:
			if !ok {
				succ = nil
				continue
			}
			if m.Topic != w.cfg.CommitTopic {
				w.rangesMu.Lock()
				tp := topicPartition{m.Topic, m.Partition}
				r := w.ranges[tp]
				if r == nil {
					r = &bookmark.Range{Topic: m.Topic, Partition: m.Partition, First: m.Offset, Last: m.Offset}
					w.ranges[tp] = r
					w.rangesBytes += rangeSize(m.Topic)
				}
				r.First, r.Last = min(r.First, m.Offset), max(r.Last, m.Offset)
				r.Count++
				w.rangesMu.Unlock()
			}
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.setAsyncErr(w.kafkaError(fmt.Sprintf("writing to %s", pe.Msg.Topic), pe.Err))
		}
		if w.inflight.Add(-1) == 0 {
			select {
			case w.zero <- struct{}{}:
			default:
			}
		}
	}
}

// acked takes the transactional producer's acknowledgement of a batch: records from first on.
func (w *Writer) acked(topic string, partition int32, first int64, records int) {
	if topic != w.cfg.CommitTopic {
		w.rangesMu.Lock()
		tp := topicPartition{topic, partition}
		last := first + int64(records) - 1
		r := w.ranges[tp]
		if r == nil {
			r = &bookmark.Range{Topic: topic, Partition: partition, First: first, Last: last}
			w.ranges[tp] = r
			w.rangesBytes += rangeSize(topic)
		}
		r.First, r.Last = min(r.First, first), max(r.Last, last)
		r.Count += int64(records)
		w.rangesMu.Unlock()
	}
	if w.inflight.Add(-int64(records)) == 0 {
		select {
		case w.zero <- struct{}{}:
		default:
		}
	}
}

func (w *Writer) setAsyncErr(err error) {
	w.asyncMu.Lock()
	defer w.asyncMu.Unlock()
	if w.asyncErr == nil {
		w.asyncErr = err
		close(w.failedCh)
	}
}

// Failed is closed when the writer fails outside a handler call (a rejected record, a failed
// commit of a group closed by its timer); Err then says why. The caller should stop the source.
func (w *Writer) Failed() <-chan struct{} { return w.failedCh }

// Err is the writer's first asynchronous error, or nil.
func (w *Writer) Err() error { return w.failed() }

func (w *Writer) failed() error {
	w.asyncMu.Lock()
	defer w.asyncMu.Unlock()
	return w.asyncErr
}

// waitAcks blocks until every record sent so far is acknowledged (or failed). It gives up only when
// no acknowledgement at all arrives for the writer's timeout.
func (w *Writer) waitAcks(ctx context.Context) error {
	w.producer.Flush()
	last := w.inflight.Load()
	for w.inflight.Load() > 0 {
		select {
		case <-w.zero:
		case <-w.failedCh:
			return w.failed()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.cfg.Timeout):
			now := w.inflight.Load()
			if now > 0 && now >= last {
				return fmt.Errorf("%d records not acknowledged by Kafka, none for %v", now, w.cfg.Timeout)
			}
			last = now
		}
	}
	return w.failed()
}

// closeGroup writes the commit stream record for the open group and commits the Kafka transaction.
// Called with mu held, between source transactions.
func (w *Writer) closeGroup(ctx context.Context) error {
	if !w.open || w.inTxn {
		return nil
	}
	start := time.Now()
	if err := w.waitAcks(ctx); err != nil {
		return err
	}
	if len(w.groupTxns) == 0 && w.progress == "" {
		// Nothing to vouch for: end the Kafka transaction without a commit record.
		if !w.cfg.Parallel {
			if err := w.producer.AbortTxn(); err != nil {
				return w.kafkaError("aborting an empty Kafka transaction", err)
			}
			w.txnStarted.Store(0)
		}
		w.open = false
		w.group--
		return nil
	}
	rec := &bookmark.CommitRecord{Version: bookmark.CommitVersion, Source: w.cfg.Source, Group: w.group,
		Resume: w.progress, Lineage: w.cfg.Lineage, State: w.state, Txns: w.groupTxns, Written: time.Now().UTC()}
	if rec.Resume == "" {
		rec.Resume = w.groupTxns[len(w.groupTxns)-1].End
	}
	w.rangesMu.Lock()
	for _, r := range w.ranges {
		rec.Ranges = append(rec.Ranges, *r)
	}
	w.ranges, w.rangesBytes = map[topicPartition]*bookmark.Range{}, 0
	w.rangesMu.Unlock()
	sortRanges(rec.Ranges)
	value, err := rec.Marshal()
	if err != nil {
		return fmt.Errorf("encoding the commit record: %w", err)
	}
	if len(value) > w.cfg.MaxMessageBytes {
		return terminal("the commit record of group %d (%d transactions, %d ranges) is %d bytes, over kafka.max_message_bytes (%d): lower kafka.group_max_records, or raise kafka.max_message_bytes with the commit topic's max.message.bytes; nothing was confirmed to the source",
			rec.Group, len(rec.Txns), len(rec.Ranges), len(value), w.cfg.MaxMessageBytes)
	}
	failpoint.Hit(ctx, "writer.before-commit-record")
	if w.cfg.Parallel {
		// Every data record is acknowledged: now the commit record, alone in a Kafka transaction,
		// which fences a zombie writer with the same transactional id.
		if err := w.producer.BeginTxn(); err != nil {
			return w.kafkaError("beginning the commit record's Kafka transaction", err)
		}
		w.txnStarted.Store(time.Now().UnixNano())
	}
	commit := &producedRecord{rec: sarama.Record{Key: []byte(w.cfg.Source), Value: value}}
	w.inflight.Add(1)
	if err := w.producer.Send(topicPartition{w.cfg.CommitTopic, 0}, commit); err != nil {
		w.inflight.Add(-1)
		return w.kafkaError("writing the commit record", err)
	}
	if err := w.waitAcks(ctx); err != nil {
		return err
	}
	failpoint.Hit(ctx, "writer.before-kafka-commit")
	if err := w.producer.CommitTxn(); err != nil {
		return w.kafkaError("committing the Kafka transaction", err)
	}
	w.txnStarted.Store(0)
	w.obs.KafkaCommit(w.groupRecords, time.Since(start))
	now := time.Now()
	for _, t := range w.groupTxns {
		if t.CommitMillis > 0 {
			w.obs.Visible(now.Sub(time.UnixMilli(t.CommitMillis)))
		}
	}
	w.last, w.lastCommitted = rec, now
	w.open, w.groupTxns, w.groupRecords, w.groupBytes, w.progress = false, nil, 0, 0, ""
	failpoint.Hit(ctx, "writer.before-source-ack")
	if w.OnDurable != nil {
		w.OnDurable(rec.Resume)
	}
	return nil
}

// writeProgress writes a commit record without transactions for a position the source passed with
// nothing to write. Called with mu held, outside a group.
func (w *Writer) writeProgress(ctx context.Context) error {
	if w.open || w.progress == "" {
		return nil
	}
	if err := w.openGroup(); err != nil {
		return err
	}
	return w.closeGroup(ctx)
}

// Idle implements capture.Idler: the source has handed on everything it has read, so an open group
// would wait for nothing but its delay; it is committed now. Under load the source's queue is
// rarely empty and groups grow (to the record, byte and delay bounds); when transactions come one
// at a time, each is visible as soon as Kafka commits it.
func (w *Writer) Idle(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failed(); err != nil {
		return err
	}
	if w.open && !w.inTxn && len(w.groupTxns) > 0 {
		return w.closeGroup(ctx)
	}
	return nil
}

// tick closes a group that has waited MaxGroupDelay while the source is quiet.
func (w *Writer) tick() {
	defer close(w.tickDone)
	t := time.NewTicker(max(w.cfg.MaxGroupDelay/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.stopTick:
			return
		case <-t.C:
		}
		w.mu.Lock()
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout+w.cfg.TransactionTimeout)
		var err error
		switch {
		case w.failed() != nil:
		case w.open && !w.inTxn && (len(w.groupTxns) > 0 || w.progress != "") && time.Since(w.groupStart) >= w.cfg.MaxGroupDelay:
			err = w.closeGroup(ctx)
		case !w.open && w.progress != "" && time.Since(w.lastCommitted) >= progressInterval:
			err = w.writeProgress(ctx)
		}
		if err != nil {
			w.setAsyncErr(err)
		}
		cancel()
		w.mu.Unlock()
	}
}

// Close ends the writer. With finish set and no source transaction in progress, the open group is
// committed first (so what was read becomes durable); otherwise the open Kafka transaction is
// aborted and its source transactions will be read again on the next start.
func (w *Writer) Close(ctx context.Context, finish bool) error {
	close(w.stopTick)
	<-w.tickDone
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	if finish && !w.open && w.failed() == nil {
		err = w.writeProgress(ctx)
	}
	if w.open {
		if finish && !w.inTxn && w.failed() == nil {
			err = w.closeGroup(ctx)
		}
		if w.open {
			w.obs.KafkaAbort()
			if w.producer.InTxn() {
				if aerr := w.producer.AbortTxn(); aerr != nil && err == nil && w.failed() == nil {
					err = w.kafkaError("aborting the open Kafka transaction", aerr)
				}
			}
			w.open = false
		}
	}
	w.shutdownProducer()
	w.admin.Close()
	return err
}

func (w *Writer) shutdownProducer() {
	w.producer.Close()
	for _, p := range w.data {
		p.AsyncClose()
	}
	if w.drained == nil {
		return // Open failed before the drains started
	}
	deadline := time.After(w.cfg.Timeout)
	for range w.data {
		select {
		case <-w.drained:
		case <-deadline:
			return
		}
	}
}

// kafkaError names what failed and decides whether a restart can cure it. A producer whose Kafka
// transaction outlived kafka.transaction_timeout was aborted by the coordinator, which bumps the
// epoch just as a second producer would: the time the transaction was open tells the two apart.
// Errors a restart cannot cure (sizes, authorisation, configuration the broker refuses) are terminal
// and name the setting to change; the others restart from the last durable position.
func (w *Writer) kafkaError(what string, err error) error {
	if errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) || errors.Is(err, sarama.ErrInvalidTxnState) {
		if started := w.txnStarted.Load(); started != 0 {
			if open := time.Since(time.Unix(0, started)); open >= w.cfg.TransactionTimeout {
				return fmt.Errorf("%s: %w: the Kafka transaction was open for %v, longer than kafka.transaction_timeout (%v), so the transaction coordinator aborted it; restarting from the last durable position. Raise kafka.transaction_timeout (at most the broker's transaction.max.timeout.ms) above the time the largest source transaction takes to write (%w)",
					what, ErrTransactionTimedOut, open.Round(time.Millisecond), w.cfg.TransactionTimeout, err)
			}
		}
		if !errors.Is(err, sarama.ErrInvalidTxnState) {
			return terminal("%s: this cdcd was fenced: another process started with kafka.transactional_id %q; run one cdcd per transactional id (%w)", what, w.cfg.TransactionalID, err)
		}
	}
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) {
		// sarama refuses before sending, e.g. a record over Producer.MaxMessageBytes.
		return terminal("%s: %v; check kafka.max_message_bytes and the other kafka.* settings; nothing was confirmed to the source", what, err)
	}
	var ke sarama.KError
	if errors.As(err, &ke) {
		if fix, ok := terminalKafkaErrors[ke]; ok {
			return terminal("%s: %s; nothing was confirmed to the source (%w)", what, fix, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ErrTransactionTimedOut is wrapped by the (retryable) error of a Kafka transaction that the
// coordinator aborted because it outlived kafka.transaction_timeout.
var ErrTransactionTimedOut = errors.New("the Kafka transaction timed out")

// terminalKafkaErrors are the broker's answers that no retry or restart changes, each with its fix.
var terminalKafkaErrors = map[sarama.KError]string{
	sarama.ErrMessageSizeTooLarge:                "a record is larger than the broker or topic accepts: raise the topic's max.message.bytes (broker message.max.bytes) and kafka.max_message_bytes together, or leave the large column out",
	sarama.ErrMessageSetSizeTooLarge:             "a batch of records is larger than the broker accepts: raise the broker's message.max.bytes, or lower kafka.max_message_bytes",
	sarama.ErrInvalidMessageSize:                 "a record size is invalid for the broker: check kafka.max_message_bytes against the broker's message.max.bytes",
	sarama.ErrInvalidTopic:                       "a topic name is invalid: correct the KCOP's topic template or kafka.commit_topic",
	sarama.ErrInvalidRequiredAcks:                "the broker refuses acks=all: check its configuration",
	sarama.ErrTopicAuthorizationFailed:           "not authorised for a topic: grant the user WRITE and DESCRIBE on the data topics and kafka.commit_topic (and CREATE to let cdcd create them)",
	sarama.ErrClusterAuthorizationFailed:         "not authorised on the cluster: grant the user IDEMPOTENT_WRITE (and CREATE to let cdcd create topics)",
	sarama.ErrTransactionalIDAuthorizationFailed: "not authorised for kafka.transactional_id: grant the user WRITE and DESCRIBE on that TransactionalId",
	sarama.ErrSASLAuthenticationFailed:           "authentication failed: check the Kafka credentials",
	sarama.ErrInvalidTransactionTimeout:          "kafka.transaction_timeout is larger than the broker's transaction.max.timeout.ms: lower it or raise the broker's limit",
	sarama.ErrUnsupportedVersion:                 "the broker does not speak the protocol cdcd needs (Kafka 3.6 or newer)",
	sarama.ErrUnsupportedForMessageFormat:        "the topic's message format is too old for transactions: set its message.format.version to 0.11 or newer",
	sarama.ErrPolicyViolation:                    "a topic cdcd creates breaks the broker's creation policy: create the topics beforehand, or change kafka.topic_partitions / kafka.replication_factor",
	sarama.ErrInvalidReplicationFactor:           "kafka.replication_factor is larger than the number of brokers: lower it",
	sarama.ErrInvalidPartitions:                  "kafka.topic_partitions is invalid: use a positive number",
	sarama.ErrInvalidConfig:                      "the broker refuses a topic configuration cdcd sets: create the topic beforehand",
}
