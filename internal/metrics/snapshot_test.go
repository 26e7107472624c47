package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
		{Table: "public.held", Rows: 40, RunRows: 40, Estimate: 100, Started: now.Add(-time.Second), Paused: true},
		{Table: "public.heldbefore", Estimate: 100, Paused: true},
	}, now)
	want := []TableStatus{
		{Table: "public.done", State: "done", Rows: 500, Chunks: 1, Estimate: 480},
		{Table: "public.big", State: "copying", Rows: 8000, Chunks: 8, Estimate: 20000, RowsPerSecond: 300, ETASeconds: 40},
		{Table: "public.next", State: "waiting", Estimate: -1, ETASeconds: -1},
		{Table: "public.unanalysed", State: "copying", Rows: 10, Estimate: -1, RowsPerSecond: 10, ETASeconds: -1},
		{Table: "public.held", State: "paused", Rows: 40, Estimate: 100, ETASeconds: -1},
		{Table: "public.heldbefore", State: "paused", Estimate: 100, ETASeconds: -1},
	}
	if len(got) != len(want) {
		t.Fatalf("%d statuses, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s:\n got %+v\nwant %+v", want[i].Table, got[i], want[i])
		}
	}
}

// TestCopyMetrics scrapes the snapshot gauges as Prometheus would.
func TestCopyMetrics(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	started := now.Add(-time.Hour)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCopyCollector(func() []capture.TableCopy {
		return []capture.TableCopy{
			{Table: "public.done", Rows: 500, Estimate: 500, Started: started, RunRows: 500, Done: true},
			{Table: "public.big", Rows: 7200, RunRows: 3600, Estimate: 36000, Started: started},
		}
	}, func() time.Time { return now }))
	want := `
# HELP cdcd_snapshot_eta_seconds Seconds left to copy the table at that rate (-1: unknown; 0: done).
# TYPE cdcd_snapshot_eta_seconds gauge
cdcd_snapshot_eta_seconds{table="public.big"} 28800
cdcd_snapshot_eta_seconds{table="public.done"} 0
# HELP cdcd_snapshot_rows_per_second Rows per second this run copied of the table, since it began copying it.
# TYPE cdcd_snapshot_rows_per_second gauge
cdcd_snapshot_rows_per_second{table="public.big"} 1
cdcd_snapshot_rows_per_second{table="public.done"} 0
# HELP cdcd_snapshot_tables_remaining Tables the running snapshot has still to copy.
# TYPE cdcd_snapshot_tables_remaining gauge
cdcd_snapshot_tables_remaining 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cdcd_snapshot_eta_seconds", "cdcd_snapshot_rows_per_second", "cdcd_snapshot_tables_remaining"); err != nil {
		t.Error(err)
	}
}
