package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cdcd-dev/cdcd/change"
)

// TestServeProfiler: /debug/pprof/ is served only when asked for.
func TestServeProfiler(t *testing.T) {
	for _, profile := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		m := New(func() (float64, float64, float64) { return 0, 0, 0 })
		if err := m.Serve(ctx, addr, profile, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != profile {
			t.Errorf("profile %v: /debug/pprof/heap answered %d: %.80s", profile, resp.StatusCode, body)
		}
		cancel()
	}
}

// TestChangesCountedByTableNameAndOp: the counters are the table's name and operation's, whatever
// shape of the table a change comes with, also once the cache of shapes has started over.
func TestChangesCountedByTableNameAndOp(t *testing.T) {
	m := New(nil)
	const shapes = 1100
	for i := range shapes {
		table := &change.Table{Schema: "s", Name: "t"} // a new shape each time, as after an ALTER
		m.Change(table, change.Insert, 2, 10)
		if i%2 == 0 {
			m.Change(table, change.Delete, 1, 5)
		}
	}
	other := &change.Table{Schema: "s", Name: "u"}
	m.Change(other, change.Insert, 1, 1)
	for _, c := range []struct {
		name      string
		vec       *prometheus.CounterVec
		table, op string
		want      float64
	}{
		{"changes", m.changes, "s.t", "c", shapes}, {"records", m.records, "s.t", "c", 2 * shapes},
		{"changes", m.changes, "s.t", "d", shapes / 2}, {"records", m.records, "s.t", "d", shapes / 2},
		{"changes", m.changes, "s.u", "c", 1}, {"records", m.records, "s.u", "c", 1},
	} {
		if got := testutil.ToFloat64(c.vec.WithLabelValues(c.table, c.op)); got != c.want {
			t.Errorf("%s{table=%s,op=%s} = %v, want %v", c.name, c.table, c.op, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.bytes); got != shapes*10+shapes/2*5+1 {
		t.Errorf("record bytes = %v", got)
	}
}
