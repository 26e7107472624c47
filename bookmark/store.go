package bookmark

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// FileStore keeps a consumer bookmark in a file. Save replaces the file atomically and durably:
// it writes a temporary file, fsyncs it, renames it over the old one and fsyncs the directory, so
// a crash leaves either the old bookmark or the new one, never a torn one.
type FileStore struct {
	Path string
}

// Save stores b.
func (s FileStore) Save(b Consumer) error {
	dir := filepath.Dir(s.Path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("bookmark: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String() + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("bookmark: writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("bookmark: syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bookmark: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.Path); err != nil {
		return fmt.Errorf("bookmark: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bookmark: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("bookmark: syncing directory %s: %w", dir, err)
	}
	return nil
}

// Load reads the stored bookmark; ok is false when none was stored yet.
func (s FileStore) Load() (b Consumer, ok bool, err error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Consumer{}, false, nil
	}
	if err != nil {
		return Consumer{}, false, fmt.Errorf("bookmark: %w", err)
	}
	b, err = ParseConsumer(strings.TrimSpace(string(data)))
	if err != nil {
		return Consumer{}, false, fmt.Errorf("bookmark: file %s: %w", s.Path, err)
	}
	return b, true, nil
}

// SQLExecer is what SQLStore needs: *sql.DB, *sql.Tx and *sql.Conn have it.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// SQLStore keeps consumer bookmarks in a table of a PostgreSQL database, one row per consumer name.
// Save takes the caller's transaction, so that a consumer applying changes to the same database stores
// its bookmark atomically with them: after a crash the database and the bookmark agree.
type SQLStore struct {
	// Table is the (optionally schema-qualified) table name, e.g. cdcd_bookmarks.
	Table string
	// Name tells consumers sharing the table apart.
	Name string
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

func (s SQLStore) check() error {
	if !identifier.MatchString(s.Table) {
		return fmt.Errorf("bookmark: table name %q: use letters, digits and underscores (schema.table allowed)", s.Table)
	}
	if s.Name == "" {
		return errors.New("bookmark: SQLStore needs a consumer name")
	}
	return nil
}

// Create makes the table if it does not exist.
func (s SQLStore) Create(ctx context.Context, db SQLExecer) error {
	if err := s.check(); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+s.Table+" (name text PRIMARY KEY, bookmark text NOT NULL, updated timestamptz NOT NULL DEFAULT now())")
	if err != nil {
		return fmt.Errorf("bookmark: creating %s: %w", s.Table, err)
	}
	return nil
}

// ErrConcurrentSave is returned by SQLStore.Save when the stored bookmark is no longer the one
// the consumer started from or last saved: another instance of the same consumer saved in between.
// The caller's transaction must roll back (its changes were applied by the other instance too) and
// this instance stop.
var ErrConcurrentSave = errors.New("another instance of this consumer saved a bookmark")

// Save stores b through tx (normally the transaction that applied the changes up to b), on the
// condition that the stored bookmark is still prev: the one this consumer loaded at its start or
// saved last (nil when none was stored yet). Two instances of one consumer therefore cannot both
// apply: the second to save fails with ErrConcurrentSave, and rolling back its transaction undoes
// what it applied. (PostgreSQL makes the second wait for the first's transaction, then sees the
// bookmark it stored.)
func (s SQLStore) Save(ctx context.Context, tx SQLExecer, prev *Consumer, b Consumer) error {
	if err := s.check(); err != nil {
		return err
	}
	var res sql.Result
	var err error
	if prev == nil {
		res, err = tx.ExecContext(ctx, "INSERT INTO "+s.Table+" (name, bookmark) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", s.Name, b.String())
	} else {
		res, err = tx.ExecContext(ctx, "UPDATE "+s.Table+" SET bookmark = $3, updated = now() WHERE name = $1 AND bookmark = $2", s.Name, prev.String(), b.String())
	}
	if err != nil {
		return fmt.Errorf("bookmark: saving to %s: %w", s.Table, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("bookmark: saving to %s: %w", s.Table, err)
	}
	if n != 1 {
		want := "none"
		if prev != nil {
			want = prev.String()
		}
		return fmt.Errorf("bookmark: consumer %s in %s: %w (the stored bookmark is no longer %s): run one instance per consumer name", s.Name, s.Table, ErrConcurrentSave, want)
	}
	return nil
}

// Load reads the stored bookmark; ok is false when none was stored yet.
func (s SQLStore) Load(ctx context.Context, db SQLExecer) (b Consumer, ok bool, err error) {
	if err := s.check(); err != nil {
		return Consumer{}, false, err
	}
	var text string
	err = db.QueryRowContext(ctx, "SELECT bookmark FROM "+s.Table+" WHERE name = $1", s.Name).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return Consumer{}, false, nil
	}
	if err != nil {
		return Consumer{}, false, fmt.Errorf("bookmark: loading from %s: %w", s.Table, err)
	}
	if b, err = ParseConsumer(text); err != nil {
		return Consumer{}, false, fmt.Errorf("bookmark: table %s, consumer %s: %w", s.Table, s.Name, err)
	}
	return b, true, nil
}
