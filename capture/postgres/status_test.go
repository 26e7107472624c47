package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// commits hands each transaction's end to the test, which acknowledges it as the writer would,
// from another goroutine once it is durable.
type commits chan string

func (commits) Begin(context.Context, *change.Txn) error           { return nil }
func (commits) Change(context.Context, *change.Change) error       { return nil }
func (c commits) Commit(_ context.Context, m *change.Commit) error { c <- m.End; return nil }

// TestQuietStreamConfirmsAtOnce: once the stream is quiet, an acknowledged position reaches the
// slot without waiting for the next periodic status (here an hour away), as the server reports
// it in pg_replication_slots.
func TestQuietStreamConfirmsAtOnce(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := fmt.Sprintf("quiet_status_%06d", rand.IntN(1_000_000))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	mustExec(t, conn, "CREATE TABLE "+name+" (id int PRIMARY KEY)")
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+name)
		_, _ = conn.Exec(context.Background(), "DROP PUBLICATION IF EXISTS "+name)
	})

	cfg := DefaultConfig()
	cfg.DSN, cfg.Slot, cfg.Publication, cfg.Tables = dsn, name, name, []string{"public." + name}
	cfg.Snapshot, cfg.Heartbeat = SnapshotNever, time.Hour
	r, err := Open(ctx, cfg, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	r.statusEvery = time.Hour
	ends := make(commits, 16)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx, capture.Resume{}, ends) }()
	defer func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		_, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", name)
	}()

	// The stream runs once the slot is active.
	for active := false; !active; time.Sleep(50 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatal("the slot never became active")
		}
		_ = conn.QueryRow(ctx, "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&active)
	}
	mustExec(t, conn, "INSERT INTO "+name+" VALUES (1)")
	var end string
	select {
	case end = <-ends:
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	}
	want, err := bookmark.ParseLSN(end)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the stream is quiet by now; the writer acknowledges
	if err := r.Ack(end); err != nil {
		t.Fatal(err)
	}
	// Well before the server asks for a reply on its own (half of wal_sender_timeout, 30 s).
	deadline := time.Now().Add(15 * time.Second)
	for {
		var confirmed string
		if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		got, err := bookmark.ParseLSN(confirmed)
		if err != nil {
			t.Fatal(err)
		}
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot is confirmed to %s, not to the acknowledged %s, while the stream is quiet", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
