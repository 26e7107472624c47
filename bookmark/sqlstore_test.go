package bookmark_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestSQLStoreSecondInstanceFails: two instances of one consumer load the same bookmark; whichever
// saves second fails with ErrConcurrentSave, also when both transactions are open at once.
func TestSQLStoreSecondInstanceFails(t *testing.T) {
	db, err := sql.Open("pgx", testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	table := fmt.Sprintf("bm_test_%06d", rand.IntN(1_000_000))
	t.Cleanup(func() { _, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table) })
	store := bookmark.SQLStore{Table: table, Name: "apply"}
	if err := store.Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	bm := func(group uint64) bookmark.Consumer {
		return bookmark.Consumer{Source: "s", CommitOffset: int64(group), Group: group, Op: -1, Done: true}
	}
	save := func(prev *bookmark.Consumer, b bookmark.Consumer) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Save(ctx, tx, prev, b); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	// Both start with nothing stored.
	if err := save(nil, bm(1)); err != nil {
		t.Fatal(err)
	}
	if err := save(nil, bm(1)); !errors.Is(err, bookmark.ErrConcurrentSave) {
		t.Fatalf("the second instance's first save: %v, want ErrConcurrentSave", err)
	}
	b1 := bm(1)
	if err := save(&b1, bm(2)); err != nil {
		t.Fatal(err)
	}
	if err := save(&b1, bm(2)); !errors.Is(err, bookmark.ErrConcurrentSave) {
		t.Fatalf("a save from a stale bookmark: %v, want ErrConcurrentSave", err)
	}
	// Both transactions open at once: the second waits for the first, then fails.
	b2 := bm(2)
	txA, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(ctx, txA, &b2, bm(3)); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- save(&b2, bm(3)) }()
	time.Sleep(300 * time.Millisecond)
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-second; !errors.Is(err, bookmark.ErrConcurrentSave) {
		t.Fatalf("the concurrent save: %v, want ErrConcurrentSave", err)
	}
	got, ok, err := store.Load(ctx, db)
	if err != nil || !ok || got != bm(3) {
		t.Fatalf("stored %v (%v, %v), want %v", got, ok, err, bm(3))
	}
}
