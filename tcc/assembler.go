package tcc

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// rec is a data record as fetched, with cdcd's ordering headers read.
type rec struct {
	tp      topicPartition
	offset  int64
	key     []byte
	value   []byte
	headers []Header
	txnID   string
	pos     string
	op      int64
	sub     int
	group   uint64
	valid   bool // the ordering headers were all present and well formed
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
	// fetch returns the next records of the assigned partitions, in offset order per partition.
	fetch(ctx context.Context) ([]rec, error)
	pause(tp topicPartition)
	resume(tp topicPartition)
	close()
}

// readHeaders fills the ordering fields of r from its headers.
func (r *rec) readHeaders() {
	var haveTxn, havePos, haveOp, haveGroup bool
	for _, h := range r.headers {
		switch h.Key {
		case bookmark.HeaderTxn:
			r.txnID, haveTxn = string(h.Value), true
		case bookmark.HeaderPos:
			r.pos, havePos = string(h.Value), true
		case bookmark.HeaderOp:
			op, sub, ok := parseOp(string(h.Value))
			r.op, r.sub, haveOp = op, sub, ok
		case bookmark.HeaderGroup:
			g, err := strconv.ParseUint(string(h.Value), 10, 64)
			r.group, haveGroup = g, err == nil && g > 0 && strconv.FormatUint(g, 10) == string(h.Value)
		}
	}
	r.valid = haveTxn && havePos && haveOp && haveGroup
}

// parseOp reads "<op>" or "<op>.<rec>" as the writer spells them (decimal, no sign, no leading
// zero); any other spelling is a foreign record's.
func parseOp(s string) (int64, int, bool) {
	opText, subText, hasSub := cutByte(s, '.')
	op, err := strconv.ParseInt(opText, 10, 64)
	if err != nil || op < 0 || strconv.FormatInt(op, 10) != opText {
		return 0, 0, false
	}
	if !hasSub {
		return op, 0, true
	}
	sub, err := strconv.Atoi(subText)
	if err != nil || sub < 1 || strconv.Itoa(sub) != subText {
		return 0, 0, false
	}
	return op, sub, true
}

func cutByte(s string, b byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// queue holds a partition's fetched records not yet consumed.
type queue struct {
	recs []rec
	head int
}

func (q *queue) len() int { return len(q.recs) - q.head }
func (q *queue) peek() *rec {
	if q.head < len(q.recs) {
		return &q.recs[q.head]
	}
	return nil
}
func (q *queue) pop() {
	q.recs[q.head] = rec{}
	q.head++
	if q.head > 1024 && q.head*2 > len(q.recs) {
		q.recs = append(q.recs[:0], q.recs[q.head:]...)
		q.head = 0
	}
}

// position orders records within a group: transaction, operation, record of the operation.
type position struct {
	txn int
	op  int64
	sub int
}

func (p position) compare(o position) int {
	return cmp.Or(cmp.Compare(p.txn, o.txn), cmp.Compare(p.op, o.op), cmp.Compare(p.sub, o.sub))
}

// assembler turns the commit stream and the data records into transactions in source order.
type assembler struct {
	src         fetcher
	maxChunk    int
	maxBuffered int
	resume      *bookmark.Consumer
	source      string
	// next is the group the commit stream must hold next; 0 before the first group of a consumer
	// that started at the end.
	next uint64

	queues map[topicPartition]*queue
	paused map[topicPartition]bool

	// the group being delivered
	g        *bookmark.CommitRecord
	gOffset  int64
	txnIndex map[[2]string]int
	ranges   map[topicPartition]bookmark.Range
	done     map[topicPartition]bool
	cur      int
	count    []int64 // records of each transaction consumed so far (delivered or skipped)
	last     position
	started  bool                   // a record of the group was consumed (or the resume point lies within it)
	prev     *bookmark.CommitRecord // the group loaded last
	log      *slog.Logger
	chunk    *Txn
	skipped  bool // records of the current transaction were skipped by the resume point
	// truncated: a range of the group was read from past its first offset, because retention
	// removed records the consumer had already delivered.
	truncated bool
	out       []*Txn
	outOps    int // records in out: one poll returns about MaxChunkOps of them, whatever the group size
}

// newAssembler reads src from its first group on; resumeAfter and fromEnd change that.
func newAssembler(src fetcher, maxChunk, maxBuffered int) *assembler {
	return &assembler{src: src, maxChunk: max(maxChunk, 1), maxBuffered: max(maxBuffered, 1),
		queues: map[topicPartition]*queue{}, paused: map[topicPartition]bool{}, next: 1, log: slog.Default()}
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
	a.ranges = make(map[topicPartition]bookmark.Range, len(g.Ranges))
	a.done = make(map[topicPartition]bool, len(g.Ranges))
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
		a.ranges[tp] = r
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
				a.done[tp] = true
				continue
			}
		}
		a.src.assign(tp, from)
		if a.queues[tp] == nil {
			a.queues[tp] = &queue{}
		}
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
	return p.compare(position{a.resume.Txn, a.resume.Op, a.resume.Rec}) <= 0
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
		var best *rec
		var bestTP topicPartition
		var bestPos position
		for tp, r := range a.ranges {
			if a.done[tp] {
				continue
			}
			q := a.queues[tp]
			for {
				h := q.peek()
				if h == nil {
					return true, nil // this partition must show its next record first
				}
				if h.offset > r.Last {
					a.done[tp] = true
					break
				}
				if h.offset < r.First || !h.valid || h.group != a.g.Group {
					a.popFrom(tp) // not vouched for by this group: a crashed writer's, or another group's
					if a.done[tp] {
						break
					}
					continue
				}
				idx, ok := a.txnIndex[[2]string{h.pos, h.txnID}]
				if !ok {
					return false, errorf(ErrInconsistent, "%s/%d@%d belongs to group %d but names transaction %s at %s, which the group does not list",
						tp.topic, tp.partition, h.offset, a.g.Group, h.txnID, h.pos)
				}
				p := position{idx, h.op, h.sub}
				if a.started && p.compare(a.last) <= 0 {
					a.popFrom(tp) // a duplicate of a record already consumed, or delivered before the resume point
					if a.done[tp] {
						break
					}
					continue
				}
				if best == nil || p.compare(bestPos) < 0 {
					best, bestTP, bestPos = h, tp, p
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
		if bestPos.txn != a.cur {
			t := a.g.Txns[a.cur]
			return false, errorf(ErrInconsistent, "group %d (commit offset %d): a record of a later transaction precedes the %dth of %d records of transaction %s at %s",
				a.g.Group, a.gOffset, a.count[a.cur]+1, t.Records, t.ID, t.Position)
		}
		r := *best
		a.popFrom(bestTP)
		a.last, a.started = bestPos, true
		a.count[a.cur]++
		if a.skip(bestPos) {
			a.skipped = true
			continue
		}
		a.add(r, bestPos)
	}
	return false, nil
}

func (a *assembler) popFrom(tp topicPartition) {
	q := a.queues[tp]
	if r, ok := a.ranges[tp]; ok && q.peek().offset >= r.Last {
		a.done[tp] = true
	}
	q.pop()
	if a.paused[tp] && q.len() <= a.maxBuffered/2 {
		a.src.resume(tp)
		a.paused[tp] = false
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

func (a *assembler) add(r rec, p position) {
	if a.chunk == nil || len(a.chunk.Ops) >= a.maxChunk {
		if a.chunk != nil {
			a.out = append(a.out, a.chunk)
			a.outOps += len(a.chunk.Ops)
			a.skipped = true // the next chunk continues the transaction
		}
		a.chunk = a.newChunk()
		a.chunk.Ops = make([]Op, 0, min(a.maxChunk, int(a.g.Txns[a.cur].Records)))
	}
	bm := bookmark.Consumer{Source: a.source, CommitOffset: a.gOffset, Group: a.g.Group, Txn: p.txn, Op: p.op, Rec: p.sub}
	a.chunk.Ops = append(a.chunk.Ops, Op{Topic: r.tp.topic, Partition: r.tp.partition, Offset: r.offset,
		Key: r.key, Value: r.value, Headers: r.headers, Index: p.op, Rec: p.sub,
		ID: opID(r.pos, p.op, p.sub), Bookmark: bm})
	a.chunk.Bookmark = bm
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
		a.out = append(a.out, a.chunk)
		a.outOps += len(a.chunk.Ops)
	}
	a.chunk, a.skipped = nil, false
	a.cur++
}

func (a *assembler) fetch(ctx context.Context) error {
	recs, err := a.src.fetch(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		q := a.queues[r.tp]
		if q == nil {
			q = &queue{}
			a.queues[r.tp] = q
		}
		q.recs = append(q.recs, r)
		if q.len() >= a.maxBuffered && !a.paused[r.tp] {
			a.src.pause(r.tp)
			a.paused[r.tp] = true
		}
	}
	return nil
}
