package metrics

import (
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/capture"
)

func TestStatuses(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	got := Statuses([]capture.TableCopy{
		{Table: "public.done", Rows: 500, Chunks: 1, Estimate: 480, Started: now.Add(-time.Minute), RunRows: 500, Done: true},
		// 3,000 rows this run in 10 s (300/s), 8,000 of an estimated 20,000 in all: 40 s left.
		{Table: "public.big", Rows: 8000, RunRows: 3000, Chunks: 8, Estimate: 20000, Started: now.Add(-10 * time.Second)},
		{Table: "public.next", Estimate: -1},
		{Table: "public.unanalysed", Rows: 10, RunRows: 10, Estimate: -1, Started: now.Add(-time.Second)},
	}, now)
	want := []TableStatus{
		{Table: "public.done", State: "done", Rows: 500, Chunks: 1, Estimate: 480},
		{Table: "public.big", State: "copying", Rows: 8000, Chunks: 8, Estimate: 20000, RowsPerSecond: 300, ETASeconds: 40},
		{Table: "public.next", State: "waiting", Estimate: -1, ETASeconds: -1},
		{Table: "public.unanalysed", State: "copying", Rows: 10, Estimate: -1, RowsPerSecond: 10, ETASeconds: -1},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s:\n got %+v\nwant %+v", want[i].Table, got[i], want[i])
		}
	}
}
