package metrics

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcd-dev/cdcd/capture"
)

// TableStatus is one table's snapshot progress as /snapshot, `cdcd status` and the log give it.
type TableStatus struct {
	Table string `json:"table"`
	// State is waiting, copying, paused or done.
	State  string `json:"state"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	Chunks int64  `json:"chunks"`
	// Estimate is the rows the source's statistics expect; -1 when unknown.
	Estimate int64 `json:"estimate"`
	// RowsPerSecond is this run's rate; ETASeconds the time left at that rate (-1 when unknown).
	RowsPerSecond float64 `json:"rows_per_second"`
	ETASeconds    float64 `json:"eta_seconds"`
}

// Statuses turns a source's progress into what people read, as of now.
func Statuses(copies []capture.TableCopy, now time.Time) []TableStatus {
	out := make([]TableStatus, len(copies))
	for i, c := range copies {
		s := TableStatus{Table: c.Table, State: "waiting", Rows: c.Rows, Bytes: c.Bytes, Chunks: c.Chunks, Estimate: c.Estimate, ETASeconds: -1}
		switch {
		case c.Done:
			s.State, s.ETASeconds = "done", 0
		case c.Paused:
			s.State = "paused"
		case !c.Started.IsZero():
			s.State = "copying"
			if took := now.Sub(c.Started).Seconds(); took > 0 && c.RunRows > 0 {
				s.RowsPerSecond = float64(c.RunRows) / took
				if c.Estimate >= 0 {
					s.ETASeconds = float64(max(c.Estimate-c.Rows, 0)) / s.RowsPerSecond
				}
			}
		}
		out[i] = s
	}
	return out
}

// copyCollector reports snapshot progress at scrape time.
type copyCollector struct {
	copying                           func() []capture.TableCopy
	now                               func() time.Time
	rows, bytes, estimated, remaining *prometheus.Desc
	rate, eta                         *prometheus.Desc
}

func (c *copyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rows
	ch <- c.bytes
	ch <- c.estimated
	ch <- c.remaining
	ch <- c.rate
	ch <- c.eta
}

func (c *copyCollector) Collect(ch chan<- prometheus.Metric) {
	left := 0
	for _, t := range Statuses(c.copying(), c.now()) {
		if t.State != "done" {
			left++
		}
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(t.Rows), t.Table)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(t.Bytes), t.Table)
		ch <- prometheus.MustNewConstMetric(c.estimated, prometheus.GaugeValue, float64(t.Estimate), t.Table)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, t.RowsPerSecond, t.Table)
		ch <- prometheus.MustNewConstMetric(c.eta, prometheus.GaugeValue, t.ETASeconds, t.Table)
	}
	ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(left))
}

// WatchCopying makes /metrics and /snapshot report the progress copying returns (the running
// source's snapshot, read when asked).
func (m *Metrics) WatchCopying(copying func() []capture.TableCopy) {
	m.copying.Store(&copying)
	m.Registry.MustRegister(newCopyCollector(copying, time.Now))
}

func newCopyCollector(copying func() []capture.TableCopy, now func() time.Time) *copyCollector {
	return &copyCollector{copying: copying, now: now,
		rows:      prometheus.NewDesc("cdcd_snapshot_rows", "Rows of the table the snapshot has copied.", []string{"table"}, nil),
		bytes:     prometheus.NewDesc("cdcd_snapshot_bytes", "Bytes of values (their text forms) this run's snapshot copied of the table.", []string{"table"}, nil),
		estimated: prometheus.NewDesc("cdcd_snapshot_rows_estimated", "Rows the source's statistics expect in the table (-1: unknown).", []string{"table"}, nil),
		remaining: prometheus.NewDesc("cdcd_snapshot_tables_remaining", "Tables the running snapshot has still to copy.", nil, nil),
		rate:      prometheus.NewDesc("cdcd_snapshot_rows_per_second", "Rows per second this run copied of the table, since it began copying it.", []string{"table"}, nil),
		eta:       prometheus.NewDesc("cdcd_snapshot_eta_seconds", "Seconds left to copy the table at that rate (-1: unknown; 0: done).", []string{"table"}, nil),
	}
}

// SnapshotCall is the body of a POST to /snapshot.
type SnapshotCall struct {
	Action string   `json:"action"`
	Tables []string `json:"tables,omitempty"`
}

// OnSnapshotRequest makes a POST to /snapshot call f, which hands the request to the running source.
func (m *Metrics) OnSnapshotRequest(f func(context.Context, capture.SnapshotRequest) error) {
	m.request.Store(&f)
}

// snapshotHandler answers GET /snapshot with the running snapshot's progress as JSON ([] when none
// runs), and takes a request to start, pause, resume or cancel one with POST.
func (m *Metrics) snapshotHandler(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodPost {
		var call SnapshotCall
		if err := json.NewDecoder(io.LimitReader(req.Body, 1<<20)).Decode(&call); err != nil {
			http.Error(w, "the request is not {\"action\": ..., \"tables\": [...]}: "+err.Error(), http.StatusBadRequest)
			return
		}
		action, err := capture.ParseSnapshotAction(call.Action)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f := m.request.Load()
		if f == nil {
			http.Error(w, "this cdcd takes no snapshot requests", http.StatusNotImplemented)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
		defer cancel()
		if err := (*f)(ctx, capture.SnapshotRequest{Action: action, Tables: call.Tables}); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		_, _ = w.Write([]byte("accepted\n"))
		return
	}
	statuses := []TableStatus{}
	if f := m.copying.Load(); f != nil {
		statuses = Statuses((*f)(), time.Now())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(statuses)
}
