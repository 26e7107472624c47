package tcc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// The model: a source history of transactions, written to simulated partitions the way cdcd's writer
// does (in commit groups, with a commit stream naming them), plus what goes wrong in real life:
// records of a writer that crashed before its commit record (orphans, reusing the next group's
// number), duplicates, foreign records without cdcd's headers, offsets that read_committed never
// shows (records of aborted Kafka transactions, transaction markers) in the data partitions and on
// the commit topic, and retention removing records the consumer had already delivered. The consumer is fed the records in
// random interleavings and batch sizes, and is itself "killed" at random points and restarted from
// the last bookmark it delivered. Its output must be the history: every record once, in order, with
// correct transaction boundaries.

type simRecord struct {
	txn     int // index in the history
	op      int64
	sub     int
	tp      topicPartition
	payload string
}

type simTxn struct {
	id, pos string
	recs    []simRecord
	changes int64
}

type simLog struct {
	recs  []rec // in offset order; offsets have gaps
	next  int64 // the offset the next record gets
	start int64 // records before it were removed (retention)
}

// add appends x at the log's next offset, after a gap of invisible offsets now and then.
func (l *simLog) add(rng *rand.Rand, x rec) int64 {
	if rng.IntN(4) == 0 {
		l.next += int64(1 + rng.IntN(3)) // an aborted transaction's records, or a marker
	}
	x.offset = l.next
	l.next++
	l.recs = append(l.recs, x)
	return x.offset
}

// at is the index of the first record at or after offset.
func (l *simLog) at(offset int64) int {
	return sort.Search(len(l.recs), func(i int) bool { return l.recs[i].offset >= offset })
}

type simWorld struct {
	history []simTxn
	commits []*bookmark.CommitRecord
	offsets []int64 // each commit record's offset on the commit topic (markers lie between)
	logs    map[topicPartition]*simLog
	tps     []topicPartition
	rng     *rand.Rand
}

func buildWorld(rng *rand.Rand) *simWorld {
	w := &simWorld{logs: map[topicPartition]*simLog{}, rng: rng}
	for t := range 1 + rng.IntN(3) {
		for p := range 1 + rng.IntN(3) {
			tp := topicPartition{fmt.Sprintf("topic%d", t), int32(p)}
			w.tps = append(w.tps, tp)
			w.logs[tp] = &simLog{}
		}
	}
	nTxns := 1 + rng.IntN(40)
	for i := range nTxns {
		st := simTxn{id: strconv.Itoa(1000 + i), pos: fmt.Sprintf("0/%X", 0x1000+i*0x100)}
		ops := rng.IntN(12) // some transactions have no records at all
		for op := range ops {
			n := 1
			if rng.IntN(5) == 0 {
				n = 2 + rng.IntN(2) // an operation written as several records
			}
			for sub := range n {
				st.recs = append(st.recs, simRecord{txn: i, op: int64(op), sub: sub, tp: w.tps[rng.IntN(len(w.tps))],
					payload: fmt.Sprintf("t%d/o%d/r%d", i, op, sub)})
			}
		}
		st.changes = int64(ops)
		w.history = append(w.history, st)
	}
	group := uint64(0)
	for i := 0; i < nTxns; {
		n := 1 + rng.IntN(5)
		txns := w.history[i:min(i+n, nTxns)]
		i += len(txns)
		group++
		// A writer that crashed after writing part of this group, before its commit record.
		if rng.IntN(4) == 0 {
			for _, t := range txns {
				for _, r := range t.recs {
					if rng.IntN(2) == 0 {
						w.append(r, group, t)
					}
				}
			}
		}
		// Foreign records between groups.
		if rng.IntN(4) == 0 {
			tp := w.tps[rng.IntN(len(w.tps))]
			l := w.logs[tp]
			l.add(rng, rec{value: []byte("foreign")})
		}
		ranges := map[topicPartition]*bookmark.Range{}
		cr := &bookmark.CommitRecord{Version: bookmark.CommitVersion, Source: "sim/db/slot", Group: group}
		for _, t := range txns {
			for _, r := range t.recs {
				if rng.IntN(10) == 0 {
					// A record of the same transaction under a group the commit stream never
					// names, within this group's range (as from a writer whose commit record
					// never came): passed over, and no clue to the transaction of the next one.
					w.append(r, group+1_000_000, t)
				}
				off := w.append(r, group, t)
				if rng.IntN(20) == 0 {
					w.append(r, group, t) // a duplicate
				}
				rg := ranges[r.tp]
				if rg == nil {
					rg = &bookmark.Range{Topic: r.tp.topic, Partition: r.tp.partition, First: off, Last: off}
					ranges[r.tp] = rg
				}
				rg.Last = max(rg.Last, off)
				rg.Count++
			}
			cr.Txns = append(cr.Txns, bookmark.TxnEntry{ID: t.id, Position: t.pos, End: t.pos + "+", Changes: t.changes, Records: int64(len(t.recs))})
			cr.Resume = t.pos + "+"
		}
		for _, rg := range ranges {
			cr.Ranges = append(cr.Ranges, *rg)
		}
		w.commits = append(w.commits, cr)
		w.offsets = append(w.offsets, int64(2*len(w.offsets))) // each record followed by its marker
	}
	return w
}

// append writes r to its partition with cdcd's headers and returns its offset.
func (w *simWorld) append(r simRecord, group uint64, t simTxn) int64 {
	l := w.logs[r.tp]
	opText := strconv.FormatInt(r.op, 10)
	if r.sub > 0 {
		opText += "." + strconv.Itoa(r.sub)
	}
	x := rec{value: []byte(r.payload), headers: []Header{
		{Key: bookmark.HeaderTxn, Value: []byte(t.id)}, {Key: bookmark.HeaderPos, Value: []byte(t.pos)},
		{Key: bookmark.HeaderOp, Value: []byte(opText)}, {Key: bookmark.HeaderGroup, Value: []byte(strconv.FormatUint(group, 10))},
	}}
	x.readHeaders()
	return l.add(w.rng, x)
}

// simFetcher serves the world to one consumer incarnation.
type simFetcher struct {
	w        *simWorld
	rng      *rand.Rand
	commitAt int
	cursor   map[topicPartition]int64
	paused   map[topicPartition]bool
}

func (f *simFetcher) nextCommit(ctx context.Context) (*bookmark.CommitRecord, int64, error) {
	if f.commitAt >= len(f.w.commits) {
		return nil, 0, errEndOfWorld
	}
	c := f.w.commits[f.commitAt]
	f.commitAt++
	return c, f.w.offsets[f.commitAt-1], nil
}

var errEndOfWorld = errors.New("end of the simulated history")

func (f *simFetcher) assign(tp topicPartition, offset int64) {
	if _, ok := f.cursor[tp]; !ok {
		f.cursor[tp] = offset
	}
}

func (f *simFetcher) logStart(_ context.Context, tp topicPartition) (int64, error) {
	return f.w.logs[tp].start, nil
}

func (f *simFetcher) fetch(ctx context.Context, queueOf func(topicPartition) *queue) error {
	var ready []topicPartition
	for _, tp := range f.w.tps {
		cur, ok := f.cursor[tp]
		l := f.w.logs[tp]
		if ok && !f.paused[tp] && l.at(cur) < len(l.recs) {
			ready = append(ready, tp)
		}
	}
	if len(ready) == 0 {
		return errEndOfWorld
	}
	tp := ready[f.rng.IntN(len(ready))]
	l := f.w.logs[tp]
	if f.cursor[tp] < l.start {
		// As Kafka: an offset retention removed cannot be read.
		return errorf(ErrDataGone, "%s/%d: offset %d is before the log start %d", tp.topic, tp.partition, f.cursor[tp], l.start)
	}
	i := l.at(f.cursor[tp])
	n := min(1+f.rng.IntN(7), len(l.recs)-i)
	f.cursor[tp] = l.recs[i+n-1].offset + 1
	seg := make([]rec, n)
	for j, r := range l.recs[i : i+n] {
		seg[j] = rec{offset: r.offset, key: r.key, value: r.value, headers: r.headers}
	}
	readSegment(seg)
	queueOf(tp).add(seg, nil)
	return nil
}

func (f *simFetcher) pause(tp topicPartition)  { f.paused[tp] = true }
func (f *simFetcher) resume(tp topicPartition) { f.paused[tp] = false }
func (f *simFetcher) close()                   {}

// expire removes, as retention would, the records of every partition that lie before the first
// record of a transaction after b (which the consumer has delivered whole).
func (w *simWorld) expire(b bookmark.Consumer) {
	id := w.commits[slices.Index(w.offsets, b.CommitOffset)].Txns[b.Txn].ID
	after := slices.IndexFunc(w.history, func(st simTxn) bool { return st.id == id }) + 1
	for tp, l := range w.logs {
		start := l.next
		for _, x := range l.recs {
			if x.valid {
				if i := slices.IndexFunc(w.history[after:], func(st simTxn) bool { return st.id == string(x.txnID()) }); i >= 0 {
					start = x.offset
					break
				}
			}
		}
		w.logs[tp].start = max(l.start, start)
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := buildWorld(rng)
	var want []string
	for _, st := range w.history {
		for _, r := range st.recs {
			want = append(want, r.payload)
		}
	}

	var got []string
	var last *bookmark.Consumer
	// A consumer that stores transaction bookmarks only (as examples/pgapply does) restarts from
	// the last Done one and receives again what it had delivered after it.
	var lastDone *bookmark.Consumer
	gotAtDone := 0
	var openTxn string // a transaction whose First chunk arrived and whose Last has not
	completed := map[string]bool{}
	for incarnation := 0; ; incarnation++ {
		if incarnation > 200 {
			t.Fatalf("seed %d: no progress after %d restarts", seed, incarnation)
		}
		f := &simFetcher{w: w, rng: rng, cursor: map[topicPartition]int64{}, paused: map[topicPartition]bool{}}
		// Queues bounded by records, or by bytes (a record here costs recOverhead and a few more).
		maxRecords, maxBytes := 1+rng.IntN(8), 1<<20
		if rng.IntN(2) == 0 {
			maxRecords, maxBytes = 1<<20, 1+rng.IntN(8*(recOverhead+200))
		}
		a := newAssembler(f, 1+rng.IntN(6), maxRecords, maxBytes)
		if lastDone != nil && last != nil && !last.Done && rng.IntN(2) == 0 {
			last, got = lastDone, got[:gotAtDone]
		}
		if last != nil {
			a.resumeAfter(*last)
			f.commitAt = slices.Index(w.offsets, last.CommitOffset)
			if last.Done && rng.IntN(3) == 0 {
				w.expire(*last)
			}
		}
		crashAfter := rng.IntN(3 * (len(want) + 1))
		delivered := 0
		crashed := false
		for !crashed {
			txns, err := a.poll(context.Background())
			for _, tx := range txns {
				if tx.First && openTxn != "" {
					t.Fatalf("seed %d: transaction %s starts while %s is open", seed, tx.ID, openTxn)
				}
				if tx.First {
					openTxn = tx.ID
				}
				if completed[tx.ID] {
					t.Fatalf("seed %d: transaction %s delivered again after its last chunk", seed, tx.ID)
				}
				for _, op := range tx.Ops {
					got = append(got, string(op.Value))
					b := op.Bookmark()
					last = &b
					delivered++
					if delivered >= crashAfter {
						crashed = true
						break
					}
				}
				if crashed {
					break
				}
				if tx.Last {
					completed[tx.ID] = true
					openTxn = ""
					b := tx.Bookmark
					last, lastDone, gotAtDone = &b, &b, len(got)
				}
			}
			if err != nil {
				if errors.Is(err, errEndOfWorld) {
					if !crashed {
						goto done
					}
					break
				}
				t.Fatalf("seed %d: %v", seed, err)
			}
			// A queue holds at most its bounds and one fetch (7 records of at most 1 KiB) more.
			for tp, q := range a.queues {
				if q.len() > maxRecords+7 || q.bytes > maxBytes+7<<10 {
					t.Fatalf("seed %d: %v holds %d records of %d bytes (bounds %d and %d); fetching should have paused", seed, tp, q.len(), q.bytes, maxRecords, maxBytes)
				}
			}
		}
		openTxn = "" // a restarted consumer continues a transaction without a First chunk
	}
done:
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("seed %d: delivered\n%v\nwant\n%v", seed, got, want)
	}
	for _, st := range w.history {
		if !completed[st.id] {
			t.Fatalf("seed %d: transaction %s never completed", seed, st.id)
		}
	}
}

func TestModel(t *testing.T) {
	n := 2000
	if s := os.Getenv("CDCD_TEST_TCC_MODEL_RUNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for seed := range uint64(n) {
		runModel(t, seed)
	}
}

func FuzzModel(f *testing.F) {
	for s := range uint64(8) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) { runModel(t, seed) })
}
