package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/internal/metrics"
)

// countingWriter counts the bytes COPY sends.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// benchSnapshot measures the initial snapshot of a table of rows rows: a plain COPY ... TO STDOUT of
// it (the ceiling), then cdcd copying it in chunks into Kafka from a new slot, with the Kafka
// transaction timeout at 60 s, reading parallel chunks at once, until its copy is complete and durable; and cdcd's peak RSS.
func benchSnapshot(rows, chunkRows, parallel int, bin, dsn, brokers string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	check(err)
	defer conn.Close(ctx)
	resetBench(ctx, conn, brokers, false)
	log.Printf("loading %d rows", rows)
	_, err = conn.Exec(ctx, fmt.Sprintf(`INSERT INTO bench.rows %s FROM generate_series(1, %d) g`, rowValues(false), rows))
	check(err)
	_, err = conn.Exec(ctx, "VACUUM ANALYZE bench.rows")
	check(err)

	var cw countingWriter
	start := time.Now()
	_, err = conn.PgConn().CopyTo(ctx, &cw, "COPY bench.rows TO STDOUT")
	check(err)
	copyTook := time.Since(start)
	log.Printf("COPY TO STDOUT: %v, %d MB", copyTook.Round(time.Millisecond), cw.n>>20)

	addr := freeAddr()
	cfg := writeConfig(dsn, brokers, pgConfig{delivery: "transactional", partitions: 1,
		kcops: "kcops:\n  - type: json\n    topic: \"bench.{table}\"\n", listen: addr, kafka: "  transaction_timeout: 60s\n",
		snapshot: fmt.Sprintf("    snapshot: initial\n    snapshot_chunk_rows: %d\n    snapshot_parallel: %d\n", chunkRows, parallel)})
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start = time.Now()
	check(cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var peak resident
	var last []metrics.TableStatus
	for {
		peak.observe(cmd.Process.Pid)
		if resp, err := http.Get("http://" + addr + "/snapshot"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = json.Unmarshal(body, &last)
		}
		if len(last) == 1 && last[0].State == "done" {
			break
		}
		select {
		case <-exited:
			log.Fatal("cdcd exited during the snapshot")
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The last chunk is handed on; it is durable once the slot is confirmed past it.
	var lsn string
	check(conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn))
	for {
		var done bool
		check(conn.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'bench_cdcd'", lsn).Scan(&done))
		if done {
			break
		}
		peak.observe(cmd.Process.Pid)
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	peak.observe(cmd.Process.Pid)
	check(cmd.Process.Signal(os.Interrupt))
	<-exited
	if n := countCommitted(brokers); n != rows {
		log.Fatalf("bench.rows holds %d committed records, want %d", n, rows)
	}
	fmt.Printf("\n| what (snapshot of %d rows, chunks of %d, %d at once) | result |\n|---|---|\n", rows, chunkRows, parallel)
	fmt.Printf("| COPY bench.rows TO STDOUT (ceiling) | %v: %.0f rows/s, %.1f MB/s (%d MB) |\n", copyTook.Round(time.Millisecond),
		float64(rows)/copyTook.Seconds(), float64(cw.n)/(1<<20)/copyTook.Seconds(), cw.n>>20)
	fmt.Printf("| cdcd initial snapshot, durable in Kafka | %v: %.0f rows/s, %.1f MB/s of values (%d chunks) |\n", took.Round(time.Millisecond),
		float64(rows)/took.Seconds(), float64(last[0].Bytes)/(1<<20)/took.Seconds(), last[0].Chunks)
	fmt.Printf("| ratio cdcd / COPY (rows/s) | %.2f |\n", copyTook.Seconds()/took.Seconds())
	fmt.Printf("| cdcd peak RSS | %v |\n", peak)
	deleteTopics(brokers)
	_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot('bench_cdcd')")
}
