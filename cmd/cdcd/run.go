package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/internal/gcbudget"
	"github.com/cdcd-dev/cdcd/internal/metrics"
	"github.com/cdcd-dev/cdcd/internal/writer"
	"github.com/cdcd-dev/cdcd/kcop"
)

func newRunCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Replicate the configured source into Kafka until stopped (SIGTERM or SIGINT)",
		Long: `run captures the source's committed transactions and writes them to Kafka, exactly once for
read_committed consumers, resuming after the last commit stream record on every start.

On SIGTERM or SIGINT it finishes the open commit group when no source transaction is half written
(aborting it otherwise), confirms what is durable to the source, and exits 0. Retryable failures
(a server restarting, a lost connection) restart the pipeline from the last durable position; errors a
restart cannot cure (configuration, privileges, a fenced producer, an oversize record) exit 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log)
			if err := runDaemon(cmd.Context(), cfg, log); err != nil {
				log.Error("cdcd stopped", "err", err)
				return exitError{code: 1, msg: err.Error()}
			}
			return nil
		},
	}
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// buildKCOP builds the chain of the kcops entries. Every entry takes, besides its KCOP's own
// options, tables: the tables it applies to (all when absent), and headers: the headers added to
// the records it writes (kcop.WithHeaders), and plugin: the Go plugin that holds its KCOP.
func buildKCOP(entries []map[string]any) (kcop.KCOP, error) {
	var chain kcop.Chain
	for i, e := range entries {
		opts := make(map[string]any, len(e))
		var name string
		var tables []string
		var headers map[string]string
		for k, v := range e {
			switch k {
			case "type":
				name, _ = v.(string)
			case "tables":
				var o struct {
					Tables []string `mapstructure:"tables"`
				}
				if err := kcop.NewOptions(map[string]any{"tables": v}).Decode(&o); err != nil {
					return nil, fmt.Errorf("kcops[%d]: tables: %w", i, err)
				}
				for _, t := range o.Tables {
					if s, n, ok := strings.Cut(t, "."); !ok || s == "" || n == "" {
						return nil, fmt.Errorf("kcops[%d]: tables: %q is not qualified; write it as schema.table (MySQL: database.table)", i, t)
					}
				}
				tables = o.Tables
			case "plugin":
				path, ok := v.(string)
				if !ok || path == "" {
					return nil, fmt.Errorf("kcops[%d]: plugin: want the path of a Go plugin (go build -buildmode=plugin), got %v", i, v)
				}
				if _, err := kcop.LoadPlugin(path); err != nil {
					return nil, fmt.Errorf("kcops[%d]: %w", i, err)
				}
			case "headers":
				var o struct {
					Headers map[string]string `mapstructure:"headers"`
				}
				if err := kcop.NewOptions(map[string]any{"headers": v}).Decode(&o); err != nil {
					return nil, fmt.Errorf("kcops[%d]: headers: %w", i, err)
				}
				headers = o.Headers
			default:
				opts[k] = v
			}
		}
		k, err := kcop.New(name, kcop.NewOptions(opts))
		if err == nil {
			k, err = kcop.WithHeaders(k, headers)
		}
		if err != nil {
			return nil, fmt.Errorf("kcops[%d]: %w", i, err)
		}
		chain = append(chain, kcop.ForTables(k, tables))
	}
	return chain, nil
}

func runDaemon(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	src, err := cfg.Source.Settings()
	if err != nil {
		return err
	}
	if v := gcbudget.InEnvironment(); v != "" && cfg.MemoryBudgetMiB > 0 {
		log.Info("memory_budget_mib is not applied: the environment sets the garbage collector's pacing", "variable", v)
	}
	defer gcbudget.Start(int64(cfg.MemoryBudgetMiB)<<20, func(m gcbudget.Mode, live int64) {
		log.Debug("garbage collector pacing", "mode", m, "live_heap_mib", live>>20, "memory_budget_mib", cfg.MemoryBudgetMiB)
	}).Stop()
	k, err := buildKCOP(cfg.KCOPs)
	if err != nil {
		return err
	}
	// A service a KCOP needs that does not answer at start is a mistake to name now; later outages
	// are retried.
	if c, ok := k.(kcop.Checker); ok {
		checkCtx, cancel := context.WithTimeout(ctx, cfg.Kafka.Timeout)
		err := c.Check(checkCtx)
		cancel()
		if err != nil {
			return fault.Terminal("kcops: %w", err)
		}
	}
	var (
		mu      sync.Mutex
		current capture.Source
	)
	running := func() capture.Source {
		mu.Lock()
		defer mu.Unlock()
		return current
	}
	var retained atomic.Int64
	m := metrics.New(func() (float64, float64, float64) {
		s := running()
		kept := float64(retained.Load())
		if l, ok := s.(capture.Lagger); ok {
			bytes, behind := l.Lag()
			return float64(max(bytes, 0)), behind, kept
		}
		return 0, 0, kept
	})
	copying := func() []capture.TableCopy {
		if c, ok := running().(capture.Copier); ok {
			return c.Copying()
		}
		return nil
	}
	m.WatchCopying(copying)
	m.OnSnapshotRequest(func(ctx context.Context, req capture.SnapshotRequest) error {
		s := running()
		if s == nil {
			return errors.New("cdcd is not streaming now (starting, or waiting for the source or Kafka); try again")
		}
		sr, ok := s.(capture.SnapshotRequester)
		if !ok {
			return fmt.Errorf("this source (%s) takes no snapshot requests", cfg.Source.Kind)
		}
		return sr.RequestSnapshot(ctx, req)
	})
	go logCopying(ctx, copying, log)
	if cfg.Metrics.Listen != "" {
		if err := m.Serve(ctx, cfg.Metrics.Listen, cfg.Metrics.Pprof, log); err != nil {
			return fault.Terminal("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
	}
	go probeRetained(ctx, func() capture.RetainedLogger {
		// The running source knows what it confirmed; the settings alone do where the server
		// keeps the position itself (a slot).
		if rl, ok := running().(capture.RetainedLogger); ok {
			return rl
		}
		rl, _ := src.(capture.RetainedLogger)
		return rl
	}, &retained)

	// Mapped once, before the restarts: a configuration a restart cannot cure must stop cdcd.
	codec, err := writer.CompressionCodec(string(cfg.Kafka.Compression))
	if err != nil {
		return err
	}
	backoff := time.Second
	busySince := time.Time{}
	var failingSince time.Time // the first failure of the current streak
	for {
		started := time.Now()
		err := runPipeline(ctx, cfg, codec, src, k, m, log, func(s capture.Source) {
			mu.Lock()
			current = s
			mu.Unlock()
		})
		m.SetHealthy(false)
		if ctx.Err() != nil {
			log.Info("stopped")
			return nil
		}
		if fault.IsTerminal(err) {
			return err
		}
		if errors.Is(err, capture.ErrInUse) {
			// A killed predecessor's walsender lets go of the slot within moments; anything else
			// holding it for long is a second cdcd.
			if busySince.IsZero() {
				busySince = time.Now()
			}
			if time.Since(busySince) > 30*time.Second {
				return err
			}
		} else {
			busySince = time.Time{}
		}
		if time.Since(started) > time.Minute {
			backoff, failingSince = time.Second, time.Time{}
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		m.SetWaiting(err.Error(), failingSince)
		log.Warn("pipeline failed; restarting from the last durable position", "err", err, "in", backoff,
			"failing_since", failingSince.UTC().Format(time.RFC3339), "for", time.Since(failingSince).Round(time.Second))
		m.Restart()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// runPipeline runs writer and source once, until ctx ends or either fails.
func runPipeline(ctx context.Context, cfg config.Config, codec sarama.CompressionCodec, src capture.Config, k kcop.KCOP, m *metrics.Metrics, log *slog.Logger, publish func(capture.Source)) error {
	kc := cfg.Kafka
	r, err := src.Open(ctx, log)
	if err != nil {
		return err
	}
	w, err := writer.Open(ctx, writer.Config{
		Brokers: kc.Brokers, ClientID: kc.ClientID, TransactionalID: kc.TransactionalID, CommitTopic: kc.CommitTopic,
		Source: r.SourceID(), Lineage: r.Lineage(), MaxGroupRecords: kc.GroupMaxRecords, MaxGroupBytes: kc.GroupMaxBytes, MaxGroupDelay: kc.GroupMaxDelay,
		TransactionTimeout: kc.TransactionTimeout, MaxMessageBytes: kc.MaxMessageBytes, Linger: kc.Linger, Compression: codec,
		TopicPartitions: kc.TopicPartitions, ReplicationFactor: kc.ReplicationFactor, MinInsyncReplicas: kc.MinInsyncReplicas, Timeout: kc.Timeout, Security: kc.Security(),
		Parallel: kc.Delivery == config.Parallel, ParallelProducers: kc.ParallelProducers,
		Logger: log, Observer: m,
	})
	if err != nil {
		_ = r.Close(context.WithoutCancel(ctx))
		return err
	}
	publish(r)
	defer publish(nil)
	w.OnDurable = func(resume string) {
		if err := r.Ack(resume); err != nil {
			log.Error("acknowledging a durable position", "resume", resume, "err", err)
		}
	}
	if last := w.Last(); last != nil {
		log.Info("resuming after the commit stream's last record", "group", last.Group, "resume", last.Resume)
	}
	m.SetHealthy(true)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-w.Failed():
			stop()
		case <-rctx.Done():
		}
	}()
	// Decoding and writing overlap: the source hands events through a queue to the KCOP stage,
	// which hands records to the writer.
	stage := kcop.NewStage(k, w, log)
	stage.SetWorkers(cfg.KCOPWorkers)
	pipe := capture.NewPipeline(ctx, stage, 4096)
	from := capture.Resume{Position: w.Resume()}
	if last := w.Last(); last != nil {
		from.Lineage, from.State = last.Lineage, last.State
	}
	runErr := r.Run(rctx, from, pipe)
	if perr := pipe.Close(); perr != nil && ctx.Err() == nil {
		runErr = perr
	}
	if werr := w.Err(); werr != nil && ctx.Err() == nil {
		runErr = werr
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), kc.Timeout+5*time.Second)
	defer cancel()
	graceful := ctx.Err() != nil
	if graceful {
		failpoint.Hit(sctx, "cdcd.shutdown")
	}
	if cerr := w.Close(sctx, graceful); cerr != nil {
		log.Warn("closing the writer", "err", cerr)
		if runErr == nil || graceful {
			runErr = cerr
		}
	}
	if f, ok := r.(capture.Flusher); ok && graceful {
		if ferr := f.Flush(sctx); ferr != nil {
			log.Warn("confirming the durable position to the source", "err", ferr)
		}
	}
	_ = r.Close(sctx)
	if graceful {
		return nil
	}
	return runErr
}

// copyLogInterval is how often a running snapshot's progress is logged.
const copyLogInterval = 10 * time.Second

// logCopying logs the progress of each table a snapshot is copying, every copyLogInterval, so that
// a long copy never looks frozen.
func logCopying(ctx context.Context, copying func() []capture.TableCopy, log *slog.Logger) {
	t := time.NewTicker(copyLogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range metrics.Statuses(copying(), time.Now()) {
			if s.State != "copying" {
				continue
			}
			attrs := []any{"table", s.Table, "rows", s.Rows, "chunks", s.Chunks, "mb", s.Bytes >> 20, "rows_per_s", int64(s.RowsPerSecond)}
			if s.Estimate >= 0 {
				attrs = append(attrs, "estimated_rows", s.Estimate)
			}
			if s.ETASeconds >= 0 {
				attrs = append(attrs, "eta", (time.Duration(s.ETASeconds) * time.Second).Round(time.Second))
			}
			log.Info("snapshot progress", attrs...)
		}
	}
}

// probeRetained asks the source how much log it keeps for cdcd: soon after the start, then every 5
// seconds.
func probeRetained(ctx context.Context, which func() capture.RetainedLogger, into *atomic.Int64) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(2 * time.Second):
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		if rl := which(); rl != nil {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if n, err := rl.RetainedLog(qctx); err == nil {
				into.Store(n)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
