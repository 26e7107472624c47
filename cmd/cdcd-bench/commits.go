package main

import (
	"context"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// commitTimes is when the commit records of a backlog became visible to a read_committed consumer:
// the first one, and the one that made the backlog's last row durable, with the rows each vouched
// for. The time between them is cdcd's streaming rate, free of what the end-to-end figure also
// holds: cdcd's start (connections, the producer's transactional id, the commit stream's last
// record) and the wait for the once-a-second confirmation to the slot.
type commitTimes struct {
	since       time.Time // the watch began, just before cdcd was started
	first, last time.Time
	firstRows   int64
	rows        int64
}

// streamingRate is the rows/s between the first and the last commit record, the first group's rows
// left out (they were read before the clock started).
func (c commitTimes) streamingRate() float64 {
	return float64(c.rows-c.firstRows) / c.last.Sub(c.first).Seconds()
}

// watchCommits reads bench.commits from its start (records written before since are skipped by
// their timestamp) until the commit records written since have vouched for rows data records.
func watchCommits(brokers string, rows int64) <-chan commitTimes {
	since := time.Now()
	out := make(chan commitTimes, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics("bench.commits"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(10*time.Millisecond))
	check(err)
	go func() {
		defer cl.Close()
		t := commitTimes{since: since}
		for t.rows < rows {
			fs := cl.PollFetches(context.Background())
			check(fs.Err())
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				if r.Timestamp.Before(since.Truncate(time.Millisecond)) {
					return
				}
				rec, err := bookmark.ParseCommitRecord(r.Value)
				check(err)
				var n int64
				for _, txn := range rec.Txns {
					n += txn.Records
				}
				if n == 0 {
					return // progress only
				}
				if t.first.IsZero() {
					t.first, t.firstRows = now, n
				}
				t.rows += n
				t.last = now
			})
		}
		out <- t
	}()
	return out
}
