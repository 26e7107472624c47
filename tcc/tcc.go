// Package tcc is the transactionally consistent consumer of cdcd's output. It reads the commit
// stream and the data records it names, and hands the application the source's transactions:
//
//   - whole: a transaction is delivered only once the commit stream vouches for it, with all its
//     records, whatever topics and partitions they were written to;
//   - in exact source order, and each operation in its place within its transaction;
//   - each record once: whatever the commit stream does not vouch for is dropped (records of a
//     crashed writer, rewrites after a restart, duplicates);
//   - resumably: every transaction and every operation carries a bookmark; a consumer started from a
//     bookmark continues with what follows it, none skipped, none repeated;
//   - in bounded memory: a large transaction arrives in chunks (Txn.First / Txn.Last) of at most
//     MaxChunkOps records, and fetching pauses partitions that run ahead.
//
// What cannot be delivered is an error, never a silent gap: records the commit stream names but Kafka
// no longer holds (retention), fewer records than it vouches for, commit groups missing from the
// commit stream (each group follows the one before it: group n+1 after n, from group 1 on), or a
// commit stream whose numbering starts over. Records already delivered may be gone: a consumer
// restarted from a bookmark does not read them again.
//
// tcc depends on package bookmark and a Kafka client only.
package tcc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/kafkasec"
)

// Header is a record header: franz-go's own type, so that a record's headers are handed on as
// fetched, without a copy per record.
type Header = kgo.RecordHeader

// Op is one data record in its place in its transaction.
type Op struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	// Value is nil for a tombstone.
	Value   []byte
	Headers []Header
	// Index is the operation's index within its transaction; Rec the record's index among the
	// records of that operation.
	Index int64
	Rec   int
	// txn is what the operations of a chunk share (the bookmark of their transaction, with Op and
	// Rec left to each operation, and its position): Bookmark and ID are made from it on demand
	// rather than stored in every Op.
	txn *opTxn
}

type opTxn struct {
	at  bookmark.Consumer
	pos string
}

// Bookmark is the position just after this record. An Op the tcc did not deliver has the zero
// bookmark.
func (o Op) Bookmark() bookmark.Consumer {
	if o.txn == nil {
		return bookmark.Consumer{}
	}
	b := o.txn.at
	b.Op, b.Rec = o.Index, o.Rec
	return b
}

// ID names the operation uniquely within the source: "<source position>/<index>", with ".<rec>"
// added for the second and later records of one operation. An Op the tcc did not deliver has the
// empty ID.
func (o Op) ID() string {
	if o.txn == nil {
		return ""
	}
	var digits [20]byte
	b := make([]byte, 0, len(o.txn.pos)+1+20+1+20)
	b = append(b, o.txn.pos...)
	b = append(b, '/')
	b = append(b, strconv.AppendInt(digits[:0], o.Index, 10)...)
	if o.Rec > 0 {
		b = append(b, '.')
		b = append(b, strconv.AppendInt(digits[:0], int64(o.Rec), 10)...)
	}
	return string(b)
}

// Txn is one source transaction, or one chunk of a large one.
type Txn struct {
	ID       string
	Position string
	// End is the source position just after the transaction.
	End        string
	CommitTime time.Time
	// Snapshot marks snapshot reads; Copy, when set, says which chunk of which table's copy this is,
	// and whether that table's copy is complete with it.
	Snapshot bool
	Copy     *bookmark.Copy
	Group    uint64
	// Changes and Records are the whole transaction's counts, whatever the chunk holds.
	Changes, Records int64
	Ops              []Op
	// First and Last mark the chunk that starts and the one that ends the transaction; a
	// transaction that fits in one chunk has both.
	First, Last bool
	// Bookmark is the position after this chunk (after the whole transaction when Last).
	Bookmark bookmark.Consumer
}

// Fetch is what Poll returns: chunks in source order, and the error that stopped it, if any.
type Fetch struct {
	Txns []*Txn
	Err  error
}

// Errors that Poll reports.
var (
	// ErrForeignBookmark: the bookmark belongs to another commit stream.
	ErrForeignBookmark = errors.New("the bookmark belongs to another commit stream")
	// ErrDataGone: the commit stream names records Kafka no longer holds (retention, deletion).
	ErrDataGone = errors.New("records the commit stream vouches for are gone from Kafka")
	// ErrInconsistent: the data records do not match what the commit stream says.
	ErrInconsistent = errors.New("the data records disagree with the commit stream")
	// ErrStreamRestarted: the commit stream's groups start over (its topic was re-created, or cdcd
	// started without it and took a new snapshot); a consumer must start anew from the beginning.
	ErrStreamRestarted = errors.New("the commit stream started over")
)

// Opt configures a Consumer.
type Opt func(*config)

type config struct {
	brokers     []string
	commitTopic string
	start       startAt
	from        bookmark.Consumer
	maxChunk    int
	maxBuffered int
	// maxBufferedBytes bounds a partition's queued bytes, as maxBuffered its records.
	maxBufferedBytes int
	// fetchClients bounds the Kafka clients the data partitions are spread over.
	fetchClients int
	log          *slog.Logger
	kgoOpts      []kgo.Opt
	security     kafkasec.Settings
}

type startAt int

const (
	startBeginning startAt = iota
	startEnd
	startBookmark
)

// Brokers sets the bootstrap brokers.
func Brokers(b ...string) Opt { return func(c *config) { c.brokers = b } }

// CommitTopic names the commit stream (cdcd's kafka.commit_topic).
func CommitTopic(t string) Opt { return func(c *config) { c.commitTopic = t } }

// FromBeginning starts with the first transaction the commit stream still holds (the default).
func FromBeginning() Opt { return func(c *config) { c.start = startBeginning } }

// FromEnd starts with the next transaction committed after the consumer starts.
func FromEnd() Opt { return func(c *config) { c.start = startEnd } }

// FromBookmark continues right after b.
func FromBookmark(b bookmark.Consumer) Opt {
	return func(c *config) { c.start, c.from = startBookmark, b }
}

// MaxChunkOps bounds the records of one delivered chunk (default 10000).
func MaxChunkOps(n int) Opt { return func(c *config) { c.maxChunk = n } }

// MaxBufferedRecords bounds the records held per partition before its fetching pauses (default
// 16384); MaxBufferedBytes bounds their bytes. A partition's fetching pauses at either bound, and
// resumes once its records are under half of both.
func MaxBufferedRecords(n int) Opt { return func(c *config) { c.maxBuffered = n } }

// MaxBufferedBytes bounds the bytes of the records held per partition before its fetching pauses
// (default 4 MiB): their keys, values and headers, and what the tcc keeps of each. The Go heap a
// consumer needs grows with it: beside the queued records it holds the fetches under way, the
// chunks being delivered, and garbage not yet collected (at four partitions and the defaults,
// records of about 380 bytes of key, value and headers peaked at 47-61 MiB; docs/benchmarks.md).
func MaxBufferedBytes(n int) Opt { return func(c *config) { c.maxBufferedBytes = n } }

// FetchClients spreads the data partitions over up to n Kafka clients (default 4), each with its
// own connections, fetching its partitions concurrently with the others: a client fetches from a
// broker one request at a time and decodes the response in one goroutine, so at several partitions
// more clients keep the merge fed. n = 1 reads every partition with one client.
func FetchClients(n int) Opt { return func(c *config) { c.fetchClients = n } }

// Logger sets the logger.
func Logger(l *slog.Logger) Opt { return func(c *config) { c.log = l } }

// Security connects with TLS and SASL as cdcd does: pass cdcd's kafka.tls and kafka.sasl settings.
func Security(s kafkasec.Settings) Opt { return func(c *config) { c.security = s } }

// KafkaOpts passes other options to the franz-go clients; they apply after Security.
func KafkaOpts(o ...kgo.Opt) Opt { return func(c *config) { c.kgoOpts = append(c.kgoOpts, o...) } }

// Consumer reads one commit stream. Poll must not be called from several goroutines at once.
type Consumer struct {
	cfg config
	src fetcher
	asm *assembler
}

// NewConsumer connects to Kafka and positions the consumer.
func NewConsumer(ctx context.Context, opts ...Opt) (*Consumer, error) {
	cfg := config{maxChunk: 10_000, maxBuffered: 16_384, maxBufferedBytes: 4 << 20, fetchClients: 4, log: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.brokers) == 0 {
		return nil, errors.New("tcc: no brokers (use tcc.Brokers)")
	}
	if cfg.commitTopic == "" {
		return nil, errors.New("tcc: no commit topic (use tcc.CommitTopic with cdcd's kafka.commit_topic)")
	}
	if cfg.fetchClients < 1 {
		return nil, fmt.Errorf("tcc: FetchClients(%d): at least one client reads the data partitions", cfg.fetchClients)
	}
	security, err := cfg.security.Kgo()
	if err != nil {
		return nil, fmt.Errorf("tcc: %w", err)
	}
	// The security options first: KafkaOpts may still override them.
	cfg.kgoOpts = append(security, cfg.kgoOpts...)
	src, err := newKafkaFetcher(ctx, cfg)
	if err != nil {
		return nil, cfg.security.Explain(err)
	}
	c := &Consumer{cfg: cfg, src: src}
	c.asm = newAssembler(src, cfg.maxChunk, cfg.maxBuffered, cfg.maxBufferedBytes)
	c.asm.log = cfg.log
	switch cfg.start {
	case startBookmark:
		c.asm.resumeAfter(cfg.from)
	case startEnd:
		c.asm.fromEnd()
	}
	return c, nil
}

// Poll waits for the next chunks and returns them with the error that stopped it, if any. A Poll
// that ended because ctx ended may simply be called again; after any other error the consumer is
// unusable: start a new one from the last bookmark delivered.
func (c *Consumer) Poll(ctx context.Context) Fetch {
	txns, err := c.asm.poll(ctx)
	return Fetch{Txns: txns, Err: err}
}

// Close releases the Kafka clients.
func (c *Consumer) Close() { c.src.close() }

// Run calls fn for every chunk in order until ctx ends (returning nil) or fn or the consumer fails.
func Run(ctx context.Context, c *Consumer, fn func(context.Context, *Txn) error) error {
	for {
		f := c.Poll(ctx)
		for _, t := range f.Txns {
			if err := fn(ctx, t); err != nil {
				return err
			}
		}
		if f.Err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return f.Err
		}
	}
}

func errorf(kind error, format string, a ...any) error {
	return fmt.Errorf("tcc: %w: %s", kind, fmt.Sprintf(format, a...))
}
