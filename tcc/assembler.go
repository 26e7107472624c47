package tcc

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// rec is a data record as fetched, with cdcd's ordering headers read. A queue holds thousands of
// them, and the garbage collector marks every pointer they hold at every cycle: they keep only
// what an Op hands on (key, value, headers), and find the transaction id and position among the
// headers when they are needed.
type rec struct {
	offset  int64
	key     []byte
	value   []byte
	headers []Header
	op      int64
	sub     int
	group   uint64
	// txnAt and posAt are the indexes in headers of the transaction id and position.
	txnAt, posAt int32
	valid        bool // the ordering headers were all present and well formed
	// size is what holding the record costs, about: its bytes, and those of its headers and of
	// this struct, for the bound on a queue's bytes.
	size int32
	// sameTxn: the record queued just before this one (and still queued when this one was) has
	// the same transaction id and position. Most do, and comparing them as the headers are read
	// spares the merge from comparing this record's (by then uncached) headers with the group's
	// transactions.
	sameTxn bool
}

type topicPartition struct {
	topic     string
	partition int32
}

// fetcher is where the assembler's records come from: Kafka in production, a simulation in tests.
type fetcher interface {
	// nextCommit returns the next record of the commit stream and its offset.
	nextCommit(ctx context.Context) (*bookmark.CommitRecord, int64, error)
	// assign makes sure tp is being read, from offset if it was not read before.
	assign(tp topicPartition, offset int64)
	// logStart is the first offset tp still holds.
	logStart(ctx context.Context, tp topicPartition) (int64, error)
	// fetch adds the next records of the assigned partitions, in offset order per partition, to
	// the queues queueOf names for their partitions, as segments readSegment has read.
	fetch(ctx context.Context, queueOf func(topicPartition) *queue) error
	pause(tp topicPartition)
	resume(tp topicPartition)
	close()
}

// readHeaders fills the ordering fields of r from its headers, and its size. The keys of cdcd's headers are
// replaced by the package's constants: each was a string of its own, allocated as the record was
// decoded, and the collector would mark all of them for as long as the record is queued.
func (r *rec) readHeaders() {
	var haveTxn, havePos, haveOp, haveGroup bool
	size := recOverhead + len(r.key) + len(r.value) + len(r.headers)*headerOverhead
	for i := range r.headers {
		h := &r.headers[i]
		switch h.Key {
		case bookmark.HeaderTxn:
			h.Key, r.txnAt, haveTxn = bookmark.HeaderTxn, int32(i), true
		case bookmark.HeaderPos:
			h.Key, r.posAt, havePos = bookmark.HeaderPos, int32(i), true
		case bookmark.HeaderOp:
			op, sub, ok := parseOp(h.Value)
			h.Key, r.op, r.sub, haveOp = bookmark.HeaderOp, op, sub, ok
		case bookmark.HeaderGroup:
			g, ok := parseDecimal(h.Value, math.MaxUint64)
			h.Key, r.group, haveGroup = bookmark.HeaderGroup, g, ok && g > 0
		case bookmark.HeaderCount:
			h.Key = bookmark.HeaderCount
		}
		size += len(h.Key) + len(h.Value)
	}
	r.valid = haveTxn && havePos && haveOp && haveGroup
	r.size = int32(min(size, math.MaxInt32))
}

// Bytes each record costs beyond its own: this struct, and each header's in franz-go's slice.
const (
	recOverhead    = int(unsafe.Sizeof(rec{}))
	headerOverhead = int(unsafe.Sizeof(Header{}))
)

// txnID and pos are the record's transaction id and position (of a valid record).
func (r *rec) txnID() []byte { return r.headers[r.txnAt].Value }
func (r *rec) pos() []byte   { return r.headers[r.posAt].Value }

// parseOp reads "<op>" or "<op>.<rec>" as the writer spells them (decimal, no sign, no leading
// zero); any other spelling is a foreign record's.
func parseOp(b []byte) (int64, int, bool) {
	opText, subText, hasSub := b, []byte(nil), false
	if i := bytes.IndexByte(b, '.'); i >= 0 {
		opText, subText, hasSub = b[:i], b[i+1:], true
	}
	op, ok := parseDecimal(opText, math.MaxInt64)
	if !ok {
		return 0, 0, false
	}
	if !hasSub {
		return int64(op), 0, true
	}
	sub, ok := parseDecimal(subText, math.MaxInt32)
	if !ok || sub < 1 {
		return 0, 0, false
	}
	return int64(op), int(sub), true
}

// parseDecimal reads a number at most limit spelled as the writer spells it: decimal digits only,
// without a leading zero. It allocates nothing; it runs for every record.
func parseDecimal(b []byte, limit uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// queue holds a partition's fetched records not yet consumed: the segments fetched, each one
// fetch response's records of the partition, in offset order. A segment is let go whole once
// consumed: its records share one response's memory anyway, so nothing is kept by the consumed
// records of a segment still being read, and no record is moved or copied after it is read.
type queue struct {
	segs   [][]rec
	head   int  // records of segs[0] consumed
	n      int  // records queued
	bytes  int  // their sizes
	paused bool // fetching the partition is paused until the queue drains
	// pool takes back consumed segments, if the fetcher gave one.
	pool *segmentPool
}

// segmentPool keeps consumed segments for the fetcher to fill again. Without it every fetch
// allocates its segments anew: more garbage, and more collections, since the live heap they would
// have kept is what paces the collector.
type segmentPool struct{ pool sync.Pool }

// get returns a segment of n records, zeroed.
func (p *segmentPool) get(n int) []rec {
	if s, ok := p.pool.Get().(*[]rec); ok && cap(*s) >= n {
		return (*s)[:n]
	}
	// Capacities in steps of 512 records, so that a segment fits the next fetch of about the same size.
	return make([]rec, n, (n+511)&^511)
}

// put takes a consumed segment back, cleared: it must not keep its fetch response alive.
func (p *segmentPool) put(seg []rec) {
	seg = seg[:cap(seg)]
	clear(seg)
	p.pool.Put(&seg)
}

// part is a data partition the group being delivered has a range of records in.
type part struct {
	tp   topicPartition
	q    *queue
	r    bookmark.Range
	done bool // the range is consumed
	// pos is the position in the group of q's head record, once known (valid).
	pos   position
	known bool
	// txn is the index in the group of the transaction of the record last popped from q, or -1
	// when that record was not identified as one of the group's.
	txn int
}

func (q *queue) len() int { return q.n }

// readSegment reads the ordering headers of a fetch's records of one partition, in offset order.
func readSegment(seg []rec) {
	for i := range seg {
		seg[i].readHeaders()
		if i > 0 {
			seg[i].sameTxn = sameTxn(&seg[i-1], &seg[i])
		}
	}
}

// sameTxn reports whether a and b are valid records of the same transaction.
func sameTxn(a, b *rec) bool {
	return a.valid && b.valid && bytes.Equal(a.txnID(), b.txnID()) && bytes.Equal(a.pos(), b.pos())
}

// add queues a segment (readSegment has read it). Its first record is compared with the last one
// queued: only a record still queued is compared with, as the merge identifies the first record
// of an empty queue itself.
func (q *queue) add(seg []rec, pool *segmentPool) {
	q.pool = pool
	if len(seg) == 0 {
		return
	}
	if q.n > 0 {
		last := q.segs[len(q.segs)-1]
		seg[0].sameTxn = sameTxn(&last[len(last)-1], &seg[0])
	}
	q.segs = append(q.segs, seg)
	q.n += len(seg)
	for i := range seg {
		q.bytes += int(seg[i].size)
	}
}

func (q *queue) peek() *rec {
	if q.n == 0 {
		return nil
	}
	return &q.segs[0][q.head]
}

func (q *queue) pop() {
	q.bytes -= int(q.segs[0][q.head].size)
	q.head++
	q.n--
	if q.head == len(q.segs[0]) {
		if q.pool != nil {
			q.pool.put(q.segs[0])
		}
		q.segs[0] = nil // let the segment, and its fetch response, go
		q.segs, q.head = q.segs[1:], 0
	}
}

// position orders records within a group: transaction, operation, record of the operation.
type position struct {
	txn int
	op  int64
	sub int
}

// before reports whether p comes before o: by transaction, then operation, then record.
func (p position) before(o position) bool {
	if p.txn != o.txn {
		return p.txn < o.txn
	}
	if p.op != o.op {
		return p.op < o.op
	}
	return p.sub < o.sub
}

// assembler turns the commit stream and the data records into transactions in source order.
type assembler struct {
	src      fetcher
	maxChunk int
	// A partition's fetching pauses when its queue holds maxBuffered records or maxBufferedBytes,
	// and resumes when it holds at most half of both.
	maxBuffered, maxBufferedBytes int
	resume                        *bookmark.Consumer
	source                        string
	// next is the group the commit stream must hold next; 0 before the first group of a consumer
	// that started at the end.
	next uint64

	queues map[topicPartition]*queue

	// the group being delivered
	g        *bookmark.CommitRecord
	gOffset  int64
	txnIndex map[[2]string]int
	parts    []*part
	cur      int
	count    []int64 // records of each transaction consumed so far (delivered or skipped)
	last     position
	started  bool                   // a record of the group was consumed (or the resume point lies within it)
	prev     *bookmark.CommitRecord // the group loaded last
	log      *slog.Logger
	chunk    *Txn
	chunkTxn *opTxn // the current chunk's transaction, shared by its Ops
	skipped  bool   // records of the current transaction were skipped by the resume point
	// truncated: a range of the group was read from past its first offset, because retention
	// removed records the consumer had already delivered.
	truncated bool
	out       []*Txn
	outOps    int // records in out: one poll returns about MaxChunkOps of them, whatever the group size
}

// newAssembler reads src from its first group on; resumeAfter and fromEnd change that.
func newAssembler(src fetcher, maxChunk, maxBuffered, maxBufferedBytes int) *assembler {
	return &assembler{src: src, maxChunk: max(maxChunk, 1), maxBuffered: max(maxBuffered, 1), maxBufferedBytes: max(maxBufferedBytes, 1),
		queues: map[topicPartition]*queue{}, next: 1, log: slog.Default()}
}

// resumeAfter makes the assembler skip everything up to and including b.
func (a *assembler) resumeAfter(b bookmark.Consumer) { a.resume, a.next = &b, b.Group }

// fromEnd makes the assembler take the first group src holds as its start.
func (a *assembler) fromEnd() { a.next = 0 }

// poll returns the next chunks, waiting for at least one.
func (a *assembler) poll(ctx context.Context) ([]*Txn, error) {
	a.out, a.outOps = nil, 0
	for len(a.out) == 0 {
		if a.g == nil {
			if err := a.loadGroup(ctx); err != nil {
				return nil, err
			}
		}
		more, err := a.advance()
		if err != nil {
			return a.out, err
		}
		if more && len(a.out) == 0 {
			if err := a.fetch(ctx); err != nil {
				return a.out, err
			}
		}
	}
	return a.out, nil
}

func (a *assembler) loadGroup(ctx context.Context) error {
	g, off, err := a.src.nextCommit(ctx)
	if err != nil {
		return err
	}
	if a.source == "" {
		a.source = g.Source
		if a.resume != nil {
			if a.resume.Source != g.Source {
				return errorf(ErrForeignBookmark, "bookmark %s is for source %q; this commit stream holds %q", a.resume, a.resume.Source, g.Source)
			}
			if off != a.resume.CommitOffset || g.Group != a.resume.Group {
				return errorf(ErrForeignBookmark, "bookmark %s names group %d at commit offset %d, but that offset holds group %d (offset %d): the bookmark is garbled or from another commit topic",
					a.resume, a.resume.Group, a.resume.CommitOffset, g.Group, off)
			}
		}
	} else if g.Source != a.source {
		return errorf(ErrInconsistent, "commit offset %d is from source %q, earlier ones from %q", off, g.Source, a.source)
	}
	switch {
	case a.next == 0 || g.Group == a.next:
	case a.prev == nil && a.next == 1:
		return errorf(ErrDataGone, "the commit stream starts with group %d at offset %d: groups 1 to %d are gone from the commit topic (retention, compaction or DeleteRecords), and with them the transactions they vouched for; start from a bookmark, or from the end, to accept that, and keep every commit record (cleanup.policy=delete, retention.ms=-1, retention.bytes=-1)",
			g.Group, off, g.Group-1)
	case g.Group > a.next:
		return errorf(ErrDataGone, "commit offset %d holds group %d where group %d was due: groups %d to %d are gone from the commit topic (retention, compaction or DeleteRecords), and with them the transactions they vouched for; keep every commit record (cleanup.policy=delete, retention.ms=-1, retention.bytes=-1)",
			off, g.Group, a.next, a.next, g.Group-1)
	case a.prev != nil && g.Group == a.prev.Group && sameTxns(a.prev.Txns, g.Txns):
		// The same group written again (a retried write after a broker failure): it vouches for
		// the transactions just delivered, so it is passed over.
		a.log.Debug("tcc: passing over a repeated commit record", "group", g.Group, "offset", off)
		return a.loadGroup(ctx)
	default:
		return errorf(ErrStreamRestarted, "commit offset %d holds group %d after group %d: the commit stream started over (its topic was re-created, or cdcd started without it and took a new snapshot); this consumer's position means nothing there: start it anew from the beginning",
			off, g.Group, a.next-1)
	}
	a.next, a.prev = g.Group+1, g
	a.g, a.gOffset = g, off
	a.txnIndex = make(map[[2]string]int, len(g.Txns))
	for i, t := range g.Txns {
		a.txnIndex[[2]string{t.Position, t.ID}] = i
	}
	a.parts = make([]*part, 0, len(g.Ranges))
	a.cur, a.count, a.started, a.chunk, a.skipped, a.truncated = 0, make([]int64, len(g.Txns)), false, nil, false, false
	resuming := a.resume != nil && a.resume.Group == g.Group
	if resuming {
		// The transactions the bookmark has delivered whole are not read again: retention may
		// have removed their records by now, which is no loss.
		a.cur = min(a.resume.Txn, len(g.Txns))
		if a.resume.Done {
			a.cur = min(a.resume.Txn+1, len(g.Txns))
		}
		a.last, a.started = position{a.cur, -1, 0}, a.cur > 0
		if a.cur == len(g.Txns) {
			return nil // delivered whole: nothing to read
		}
	}
	for _, r := range g.Ranges {
		tp := topicPartition{r.Topic, r.Partition}
		p := &part{tp: tp, q: a.queueOf(tp), r: r, txn: -1}
		a.parts = append(a.parts, p)
		from := r.First
		if resuming {
			start, err := a.src.logStart(ctx, tp)
			if err != nil {
				return err
			}
			if start > r.First {
				from, a.truncated = start, true
			}
			if start > r.Last {
				p.done = true
				continue
			}
		}
		a.src.assign(tp, from)
	}
	return nil
}

// sameTxns reports whether two commit records name the same transactions.
func sameTxns(a, b []bookmark.TxnEntry) bool {
	return slices.EqualFunc(a, b, func(x, y bookmark.TxnEntry) bool {
		return x.ID == y.ID && x.Position == y.Position && x.End == y.End && x.Changes == y.Changes && x.Records == y.Records
	})
}

// skip reports whether a record at p of the current group lies at or before the resume point.
func (a *assembler) skip(p position) bool {
	if a.resume == nil || a.resume.Group != a.g.Group {
		return false
	}
	if p.txn != a.resume.Txn {
		return p.txn < a.resume.Txn
	}
	if a.resume.Done {
		return true
	}
	return !(position{a.resume.Txn, a.resume.Op, a.resume.Rec}).before(p)
}

// advance consumes what the queues allow, up to about a chunk's worth of records; it reports
// whether it needs more records.
func (a *assembler) advance() (bool, error) {
	for a.outOps < a.maxChunk {
		for a.cur < len(a.g.Txns) && a.count[a.cur] == a.g.Txns[a.cur].Records {
			a.finishTxn()
		}
		if a.cur == len(a.g.Txns) {
			a.g = nil
			return false, nil
		}
		var best *part
		for _, p := range a.parts {
			if p.done {
				continue
			}
			for {
				h := p.q.peek()
				if h == nil {
					return true, nil // this partition must show its next record first
				}
				if !p.known {
					if h.offset > p.r.Last {
						p.done = true
						break
					}
					if h.offset < p.r.First || !h.valid || h.group != a.g.Group {
						a.popFrom(p) // not vouched for by this group: a crashed writer's, or another group's
						if p.done {
							break
						}
						continue
					}
					idx, ok := p.txn, h.sameTxn && p.txn >= 0
					if !ok {
						idx, ok = a.txnOf(h)
					}
					if !ok {
						return false, errorf(ErrInconsistent, "%s/%d@%d belongs to group %d but names transaction %s at %s, which the group does not list",
							p.tp.topic, p.tp.partition, h.offset, a.g.Group, h.txnID(), h.pos())
					}
					p.pos, p.known, p.txn = position{idx, h.op, h.sub}, true, idx
				}
				if a.started && !a.last.before(p.pos) {
					a.popFrom(p) // a duplicate of a record already consumed, or delivered before the resume point
					if p.done {
						break
					}
					continue
				}
				if best == nil || p.pos.before(best.pos) {
					best = p
				}
				break
			}
		}
		if best == nil {
			t := a.g.Txns[a.cur]
			if a.truncated {
				return false, errorf(ErrDataGone, "group %d (commit offset %d): transaction %s at %s has %d of the %d records the commit stream vouches for: retention removed the others before they were delivered; raise the data topics' retention",
					a.g.Group, a.gOffset, t.ID, t.Position, a.count[a.cur], t.Records)
			}
			return false, errorf(ErrInconsistent, "group %d (commit offset %d): transaction %s at %s has %d records, the commit stream vouches for %d",
				a.g.Group, a.gOffset, t.ID, t.Position, a.count[a.cur], t.Records)
		}
		bestPos := best.pos
		if bestPos.txn != a.cur {
			t := a.g.Txns[a.cur]
			return false, errorf(ErrInconsistent, "group %d (commit offset %d): a record of a later transaction precedes the %dth of %d records of transaction %s at %s",
				a.g.Group, a.gOffset, a.count[a.cur]+1, t.Records, t.ID, t.Position)
		}
		a.last, a.started = bestPos, true
		a.count[a.cur]++
		if a.skip(bestPos) {
			a.skipped = true
		} else {
			a.add(best.tp, best.q.peek(), bestPos)
		}
		a.popFrom(best)
	}
	return false, nil
}

// txnOf is the index in the group of the transaction h belongs to; the transaction being
// delivered is checked first, as most records belong to it.
func (a *assembler) txnOf(h *rec) (int, bool) {
	if a.cur < len(a.g.Txns) {
		if t := &a.g.Txns[a.cur]; string(h.pos()) == t.Position && string(h.txnID()) == t.ID {
			return a.cur, true
		}
	}
	idx, ok := a.txnIndex[[2]string{string(h.pos()), string(h.txnID())}]
	return idx, ok
}

func (a *assembler) popFrom(p *part) {
	q := p.q
	if q.peek().offset >= p.r.Last {
		p.done = true
	}
	q.pop()
	if !p.known {
		p.txn = -1 // the next record's transaction cannot be taken from this one's
	}
	p.known = false
	if q.paused && q.len() <= a.maxBuffered/2 && q.bytes <= a.maxBufferedBytes/2 {
		a.src.resume(p.tp)
		q.paused = false
	}
}

func (a *assembler) newChunk() *Txn {
	t := a.g.Txns[a.cur]
	c := &Txn{ID: t.ID, Position: t.Position, End: t.End, Snapshot: t.Snapshot, Copy: t.Copy, Group: a.g.Group,
		Changes: t.Changes, Records: t.Records, First: a.chunk == nil && !a.skipped}
	if t.CommitMillis != 0 {
		c.CommitTime = time.UnixMilli(t.CommitMillis).UTC()
	}
	return c
}

func (a *assembler) add(tp topicPartition, r *rec, p position) {
	if a.chunk == nil || len(a.chunk.Ops) >= a.maxChunk {
		if a.chunk != nil {
			a.emit(a.chunk)
			a.skipped = true // the next chunk continues the transaction
		}
		a.chunk = a.newChunk()
		a.chunk.Ops = make([]Op, 0, min(a.maxChunk, int(a.g.Txns[a.cur].Records)))
		a.chunkTxn = &opTxn{at: bookmark.Consumer{Source: a.source, CommitOffset: a.gOffset, Group: a.g.Group, Txn: p.txn}, pos: a.chunk.Position}
	}
	a.chunk.Ops = append(a.chunk.Ops, Op{Topic: tp.topic, Partition: tp.partition, Offset: r.offset,
		Key: r.key, Value: r.value, Headers: r.headers, Index: p.op, Rec: p.sub, txn: a.chunkTxn})
}

// finishTxn closes the current transaction's last chunk (an empty one for a transaction without
// records) unless the resume point lies at or after its end.
func (a *assembler) finishTxn() {
	if !a.skip(position{a.cur, 1<<62 - 1, 1<<31 - 1}) || a.chunk != nil {
		if a.chunk == nil {
			a.chunk = a.newChunk()
		}
		a.chunk.Last = true
		a.chunk.Bookmark = bookmark.Consumer{Source: a.source, CommitOffset: a.gOffset, Group: a.g.Group, Txn: a.cur, Op: -1, Done: true}
		a.emit(a.chunk)
	}
	a.chunk, a.skipped = nil, false
	a.cur++
}

// emit hands chunk c on; a chunk that does not end its transaction ends at its last record.
func (a *assembler) emit(c *Txn) {
	if !c.Last && len(c.Ops) > 0 {
		c.Bookmark = c.Ops[len(c.Ops)-1].Bookmark()
	}
	a.out = append(a.out, c)
	a.outOps += len(c.Ops)
}

func (a *assembler) fetch(ctx context.Context) error {
	if err := a.src.fetch(ctx, a.queueOf); err != nil {
		return err
	}
	for tp, q := range a.queues {
		if (q.len() >= a.maxBuffered || q.bytes >= a.maxBufferedBytes) && !q.paused {
			a.src.pause(tp)
			q.paused = true
		}
	}
	return nil
}

// queueOf is the queue of tp's fetched records.
func (a *assembler) queueOf(tp topicPartition) *queue {
	q := a.queues[tp]
	if q == nil {
		q = &queue{}
		a.queues[tp] = q
	}
	return q
}
