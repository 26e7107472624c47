package tcc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// consume runs one consumer over w from the beginning (or after b) until the world ends or an error
// stops it; it returns the payloads delivered and the error.
func consume(w *simWorld, seed uint64, b *bookmark.Consumer) ([]string, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	f := &simFetcher{w: w, rng: rng, cursor: map[topicPartition]int64{}, paused: map[topicPartition]bool{}}
	a := newAssembler(f, 4, 16, 1<<20)
	if b != nil {
		a.resumeAfter(*b)
		f.commitAt = slices.Index(w.offsets, b.CommitOffset)
	}
	var got []string
	for {
		txns, err := a.poll(context.Background())
		for _, tx := range txns {
			for _, op := range tx.Ops {
				got = append(got, string(op.Value))
			}
		}
		if err != nil {
			if errors.Is(err, errEndOfWorld) {
				return got, nil
			}
			return got, err
		}
	}
}

// worldWithGroups builds worlds until one has at least n commit groups with records.
func worldWithGroups(t *testing.T, n int) (*simWorld, uint64) {
	for seed := uint64(0); seed < 1000; seed++ {
		w := buildWorld(rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
		full := 0
		for _, c := range w.commits {
			if len(c.Ranges) > 0 {
				full++
			}
		}
		if full >= n {
			return w, seed
		}
	}
	t.Fatal("no world with enough groups")
	return nil, 0
}

// TestCommitStreamFaults: a commit stream that lost a record in the middle or at its head, or whose
// numbering starts over, is reported (ErrDataGone, ErrStreamRestarted), never read past in silence.
func TestCommitStreamFaults(t *testing.T) {
	t.Run("a record missing in the middle", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		w.commits = slices.Delete(w.commits, 2, 3)
		w.offsets = slices.Delete(w.offsets, 2, 3)
		if _, err := consume(w, seed, nil); !errors.Is(err, ErrDataGone) {
			t.Fatalf("err = %v, want ErrDataGone", err)
		}
	})
	t.Run("the head missing", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		w.commits, w.offsets = w.commits[1:], w.offsets[1:]
		got, err := consume(w, seed, nil)
		if !errors.Is(err, ErrDataGone) || len(got) != 0 {
			t.Fatalf("delivered %d, err = %v; want nothing and ErrDataGone", len(got), err)
		}
	})
	t.Run("a commit record written twice", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		again := *w.commits[2]
		w.commits = slices.Insert(w.commits, 3, &again)
		for i := range w.offsets {
			w.offsets[i] = int64(2 * i)
		}
		w.offsets = append(w.offsets, int64(2*len(w.offsets)))
		got, err := consume(w, seed, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, st := range w.history {
			for _, r := range st.recs {
				want = append(want, r.payload)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("delivered\n%v\nwant\n%v", got, want)
		}
	})
	t.Run("the same group number for other transactions", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		other := *w.commits[3]
		other.Group = w.commits[2].Group
		w.commits[3] = &other
		if _, err := consume(w, seed, nil); !errors.Is(err, ErrStreamRestarted) {
			t.Fatalf("err = %v, want ErrStreamRestarted", err)
		}
	})
	t.Run("the numbering starts over", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		restart := *w.commits[0]
		w.commits = append(w.commits, &restart)
		w.offsets = append(w.offsets, w.offsets[len(w.offsets)-1]+2)
		if _, err := consume(w, seed, nil); !errors.Is(err, ErrStreamRestarted) {
			t.Fatalf("err = %v, want ErrStreamRestarted", err)
		}
	})
}

// TestUndeliveredRecordsGone: retention that removed records not yet delivered is ErrDataGone (or,
// where the consumer reads a range from its start, the fetch's own ErrDataGone); a group's last
// record missing is ErrInconsistent.
func TestUndeliveredRecordsGone(t *testing.T) {
	t.Run("retention past the bookmark", func(t *testing.T) {
		w, seed := worldWithGroups(t, 4)
		// Deliver the first group's first transaction, then let retention take everything.
		c := w.commits[0]
		b := bookmark.Consumer{Source: c.Source, CommitOffset: w.offsets[0], Group: c.Group, Txn: 0, Op: -1, Done: true}
		for _, l := range w.logs {
			l.start = l.next
		}
		rest := 0
		for _, cr := range w.commits {
			for _, e := range cr.Txns {
				rest += int(e.Records)
			}
		}
		if rest == int(c.Txns[0].Records) {
			t.Skip("nothing after the bookmark")
		}
		if _, err := consume(w, seed, &b); !errors.Is(err, ErrDataGone) {
			t.Fatalf("err = %v, want ErrDataGone", err)
		}
	})
	t.Run("a group's last record missing", func(t *testing.T) {
		// A range whose partition holds records after it, so the consumer sees the range end.
		for seed := uint64(0); seed < 1000; seed++ {
			w := buildWorld(rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
			for _, c := range w.commits {
				for _, r := range c.Ranges {
					l := w.logs[topicPartition{r.Topic, r.Partition}]
					if i := l.at(r.Last); i+1 < len(l.recs) {
						l.recs = slices.Delete(l.recs, i, i+1)
						if _, err := consume(w, seed, nil); !errors.Is(err, ErrInconsistent) {
							t.Fatalf("seed %d: err = %v, want ErrInconsistent", seed, err)
						}
						return
					}
				}
			}
		}
		t.Fatal("no world with a range followed by more records")
	})
}
