package tcc

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// benchFetcher serves a history of groups as Kafka would to a consumer that keeps up: each fetch
// returns up to batch records of every partition, with the ordering headers still to be read.
type benchFetcher struct {
	commits []*bookmark.CommitRecord
	logs    map[topicPartition][]rec
	tps     []topicPartition
	next    int
	cursor  map[topicPartition]int
	batch   int
	// segments, as kafkaFetcher's, come back from the queues once consumed.
	segments segmentPool
}

// newBenchFetcher builds groups of txns transactions of recs records each, the records of a
// transaction spread over partitions as keys spread them.
func newBenchFetcher(groups, txns, recs, partitions int) *benchFetcher {
	f := &benchFetcher{logs: map[topicPartition][]rec{}, cursor: map[topicPartition]int{}, batch: 500}
	for p := range partitions {
		f.tps = append(f.tps, topicPartition{"bench.rows", int32(p)})
	}
	xid := 1000
	for g := 1; g <= groups; g++ {
		c := &bookmark.CommitRecord{Source: "pg:bench", Group: uint64(g)}
		first := map[topicPartition]int64{}
		for range txns {
			xid++
			id, pos := strconv.Itoa(xid), fmt.Sprintf("0/%X", xid*4096)
			for op := range recs {
				tp := f.tps[(op*7919+xid)%partitions]
				l := f.logs[tp]
				if _, ok := first[tp]; !ok {
					first[tp] = int64(len(l))
				}
				f.logs[tp] = append(l, rec{offset: int64(len(l)), key: []byte(strconv.Itoa(op)),
					value: make([]byte, 200), headers: []Header{
						{Key: bookmark.HeaderTxn, Value: []byte(id)}, {Key: bookmark.HeaderPos, Value: []byte(pos)},
						{Key: bookmark.HeaderOp, Value: []byte(strconv.Itoa(op))}, {Key: bookmark.HeaderGroup, Value: []byte(strconv.Itoa(g))}}})
			}
			c.Txns = append(c.Txns, bookmark.TxnEntry{ID: id, Position: pos, Changes: int64(recs), Records: int64(recs)})
		}
		for _, tp := range f.tps {
			if o, ok := first[tp]; ok {
				c.Ranges = append(c.Ranges, bookmark.Range{Topic: tp.topic, Partition: tp.partition, First: o, Last: int64(len(f.logs[tp])) - 1})
			}
		}
		f.commits = append(f.commits, c)
	}
	return f
}

func (f *benchFetcher) nextCommit(context.Context) (*bookmark.CommitRecord, int64, error) {
	if f.next == len(f.commits) {
		return nil, 0, errEndOfWorld
	}
	f.next++
	return f.commits[f.next-1], int64(f.next - 1), nil
}
func (f *benchFetcher) assign(topicPartition, int64)                            {}
func (f *benchFetcher) logStart(context.Context, topicPartition) (int64, error) { return 0, nil }
func (f *benchFetcher) pause(topicPartition)                                    {}
func (f *benchFetcher) resume(topicPartition)                                   {}
func (f *benchFetcher) close()                                                  {}

func (f *benchFetcher) fetch(_ context.Context, queueOf func(topicPartition) *queue) error {
	fetched := false
	for _, tp := range f.tps {
		l, i := f.logs[tp], f.cursor[tp]
		n := min(f.batch, len(l)-i)
		if n > 0 {
			// As kafkaFetcher does: a segment of fresh records, its headers read.
			seg := f.segments.get(n)
			for j, r := range l[i : i+n] {
				seg[j] = rec{offset: r.offset, key: r.key, value: r.value, headers: r.headers}
			}
			readSegment(seg)
			queueOf(tp).add(seg, &f.segments)
			fetched = true
		}
		f.cursor[tp] = i + n
	}
	if !fetched {
		return errEndOfWorld
	}
	return nil
}

// BenchmarkAssembler measures the tcc's own work per record (reading the ordering headers, merging
// the partitions in source order, building transactions), without Kafka: 100 groups of 50
// transactions of 100 records, over 1 and 4 partitions.
func BenchmarkAssembler(b *testing.B) {
	for _, partitions := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", partitions), func(b *testing.B) {
			const groups, txns, recs = 100, 50, 100
			f := newBenchFetcher(groups, txns, recs, partitions)
			b.ReportAllocs()
			for b.Loop() {
				f.next, f.cursor = 0, map[topicPartition]int{}
				a := newAssembler(f, 10_000, 10_000, 64<<20)
				n := 0
				for n < groups*txns*recs {
					out, err := a.poll(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					for _, t := range out {
						n += len(t.Ops)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*groups*txns*recs), "ns/record")
		})
	}
}
