// Package metrics is cdcd's Prometheus instrumentation and its HTTP endpoint (/metrics, /healthz).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
)

// Metrics holds cdcd's collectors. It implements writer.Observer.
type Metrics struct {
	Registry     *prometheus.Registry
	changes      *prometheus.CounterVec
	records      *prometheus.CounterVec
	bytes        prometheus.Counter
	transactions prometheus.Counter
	commits      prometheus.Counter
	aborts       prometheus.Counter
	commitTime   prometheus.Histogram
	visible      prometheus.Histogram
	restarts     prometheus.Counter
	// counted holds the changes' and records' counters of each table shape and operation, so that
	// a change costs a map look-up rather than a label hash and a name built anew.
	counted change.ShapeCache[tableOp, changeCounters]
	healthy atomic.Bool
	waiting atomic.Pointer[string]
	copying atomic.Pointer[func() []capture.TableCopy]
	request atomic.Pointer[func(context.Context, capture.SnapshotRequest) error]
}

// New registers the collectors; lag reports the source lag in bytes and seconds and the WAL the slot
// retains, read at scrape time.
func New(lag func() (bytes, seconds, retained float64)) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdcd_changes_total",
			Help: "Row changes read from the source, by table and operation (c, u, d, r, t)."}, []string{"table", "op"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cdcd_records_total",
			Help: "Kafka data records the KCOPs made, by table and operation."}, []string{"table", "op"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcd_record_bytes_total",
			Help: "Bytes of keys, values and headers of the data records."}),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcd_transactions_total",
			Help: "Source transactions written."}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcd_kafka_commits_total",
			Help: "Kafka transactions committed (commit groups)."}),
		aborts: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcd_kafka_aborts_total",
			Help: "Kafka transactions aborted."}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cdcd_kafka_commit_seconds",
			Help: "Time to close a commit group: acknowledgements, commit record and commit.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		visible: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cdcd_source_commit_to_visible_seconds",
			Help: "From a transaction's commit in the source to its Kafka commit (visible to read_committed consumers); millisecond resolution.", Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcd_pipeline_restarts_total",
			Help: "Restarts of the pipeline after a retryable error."}),
	}
	reg.MustRegister(m.changes, m.records, m.bytes, m.transactions, m.commits, m.aborts, m.commitTime, m.visible, m.restarts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if lag != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdcd_source_lag_bytes",
				Help: "Source log read or written but not yet durable in Kafka (PostgreSQL: server WAL end minus confirmed LSN; MySQL/MariaDB: within the current binlog file)."},
				func() float64 { b, _, _ := lag(); return b }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdcd_source_lag_seconds",
				Help: "Seconds between the source's commit of the last transaction read and now, while behind."},
				func() float64 { _, s, _ := lag(); return s }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdcd_source_log_retained_bytes",
				Help: "Log the source keeps for cdcd: the WAL a PostgreSQL slot keeps from being recycled, the MySQL/MariaDB binlog after cdcd's durable position."},
				func() float64 { _, _, r := lag(); return r }),
		)
	}
	return m
}

// Change implements writer.Observer.
func (m *Metrics) Change(table *change.Table, op change.Op, records, bytes int) {
	c := m.countersOf(table, op)
	c.changes.Inc()
	c.records.Add(float64(records))
	m.bytes.Add(float64(bytes))
}

type tableOp struct {
	table *change.Table
	op    change.Op
}

type changeCounters struct{ changes, records prometheus.Counter }

// countersOf is the counters of table's op changes.
func (m *Metrics) countersOf(table *change.Table, op change.Op) changeCounters {
	c, _ := m.counted.Get(tableOp{table, op}, func(k tableOp) (changeCounters, error) {
		name, o := k.table.QualifiedName(), k.op.String()
		return changeCounters{m.changes.WithLabelValues(name, o), m.records.WithLabelValues(name, o)}, nil
	})
	return c
}

// Transaction implements writer.Observer.
func (m *Metrics) Transaction() { m.transactions.Inc() }

// KafkaCommit implements writer.Observer.
func (m *Metrics) KafkaCommit(_ int, took time.Duration) {
	m.commits.Inc()
	m.commitTime.Observe(took.Seconds())
}

// Visible implements writer.Observer.
func (m *Metrics) Visible(after time.Duration) { m.visible.Observe(after.Seconds()) }

// KafkaAbort implements writer.Observer.
func (m *Metrics) KafkaAbort() { m.aborts.Inc() }

// Restart counts a pipeline restart.
func (m *Metrics) Restart() { m.restarts.Inc() }

// SetHealthy sets what /healthz answers: 200 while the pipeline streams, 503 otherwise.
func (m *Metrics) SetHealthy(ok bool) {
	m.healthy.Store(ok)
	if ok {
		m.waiting.Store(nil)
	}
}

// SetWaiting says, while the pipeline does not stream, what cdcd is waiting for and since when;
// /healthz answers it with its 503.
func (m *Metrics) SetWaiting(what string, since time.Time) {
	w := fmt.Sprintf("waiting since %s (%s): %s", since.UTC().Format(time.RFC3339), time.Since(since).Round(time.Second), what)
	m.waiting.Store(&w)
}

// Serve answers /metrics, /healthz and /snapshot on addr until ctx ends, and Go's profiler under
// /debug/pprof/ when profile is set.
func (m *Metrics) Serve(ctx context.Context, addr string, profile bool, log *slog.Logger) error {
	mux := http.NewServeMux()
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/snapshot", m.snapshotHandler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if m.healthy.Load() {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		msg := "not streaming"
		if w := m.waiting.Load(); w != nil {
			msg = "not streaming: " + *w
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	return nil
}
