// Command pgapply is an example tcc consumer: it applies the source transactions that cdcd wrote
// with the JSON KCOP to a second PostgreSQL database, exactly once. Each source transaction becomes
// one transaction of the target, which also stores the consumer's bookmark (bookmark.SQLStore) and
// logs the transaction in cdcd_applied; so after a crash, even a kill -9, the target and the bookmark
// agree, and the consumer continues right after the last transaction it committed.
//
// The target must have the source's tables (same schema and table names, same primary keys).
//
//	go run ./examples/pgapply -brokers 127.0.0.1:19092 -commit-topic cdcd.demo.commits \
//	    -target 'postgres://cdc:cdc@127.0.0.1:15432/cdcd_target'
package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/kafkasec"
	"github.com/cdcd-dev/cdcd/tcc"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:19092", "Kafka brokers, comma-separated")
	commitTopic := flag.String("commit-topic", "cdcd.commits", "cdcd's kafka.commit_topic")
	target := flag.String("target", "", "the target database (PostgreSQL URL)")
	name := flag.String("name", "pgapply", "this consumer's name in the bookmark table")
	maxChunk := flag.Int("max-chunk", 10_000, "the most records of one delivered chunk of a large transaction")
	// The same TLS and SASL settings as cdcd's kafka.tls and kafka.sasl; the password only from a
	// file or the environment (CDCD_KAFKA_SASL_PASSWORD), never from the command line others can read.
	var sec kafkasec.Settings
	flag.BoolVar(&sec.TLS.Enabled, "tls", false, "connect to the brokers over TLS")
	flag.StringVar(&sec.TLS.CAFile, "tls-ca-file", "", "PEM file of the CA certificates that sign the brokers' certificates")
	flag.StringVar(&sec.TLS.CertFile, "tls-cert-file", "", "PEM client certificate (with -tls-key-file)")
	flag.StringVar(&sec.TLS.KeyFile, "tls-key-file", "", "PEM private key of -tls-cert-file")
	flag.StringVar(&sec.TLS.ServerName, "tls-server-name", "", "the name the brokers' certificates must carry")
	mechanism := flag.String("sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	flag.StringVar(&sec.SASL.User, "sasl-user", "", "SASL user name")
	flag.StringVar(&sec.SASL.PasswordFile, "sasl-password-file", "", "a file holding the SASL password (or set CDCD_KAFKA_SASL_PASSWORD)")
	flag.Parse()
	sec.SASL.Mechanism = kafkasec.Mechanism(*mechanism)
	if sec.SASL.PasswordFile == "" {
		sec.SASL.Password = os.Getenv("CDCD_KAFKA_SASL_PASSWORD")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, strings.Split(*brokers, ","), sec, *commitTopic, *target, *name, *maxChunk); err != nil {
		log.Error("pgapply stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, brokers []string, sec kafkasec.Settings, commitTopic, target, name string, maxChunk int) error {
	if target == "" {
		return errors.New("-target is required")
	}
	db, err := sql.Open("pgx", target)
	if err != nil {
		return err
	}
	defer db.Close()
	store := bookmark.SQLStore{Table: "cdcd_bookmarks", Name: name}
	if err := store.Create(ctx, db); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS cdcd_applied (seq bigserial PRIMARY KEY,
		consumer text NOT NULL, txn text NOT NULL, pos text NOT NULL, bookmark text NOT NULL)`); err != nil {
		return err
	}
	opts := []tcc.Opt{tcc.Brokers(brokers...), tcc.CommitTopic(commitTopic), tcc.Logger(log), tcc.MaxChunkOps(maxChunk), tcc.Security(sec)}
	// saved is the bookmark this instance started from or saved last: every save is conditional on
	// it, so a second instance of the same consumer fails instead of applying twice.
	var saved *bookmark.Consumer
	if b, ok, err := store.Load(ctx, db); err != nil {
		return err
	} else if ok {
		log.Info("resuming", "after", b.String())
		opts = append(opts, tcc.FromBookmark(b))
		saved = &b
	}
	c, err := tcc.NewConsumer(ctx, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	a := &applier{db: db, types: map[string]map[string]string{}}
	var tx *sql.Tx
	defer func() {
		if tx != nil {
			_ = tx.Rollback()
		}
	}()
	return tcc.Run(ctx, c, func(ctx context.Context, t *tcc.Txn) error {
		if tx == nil {
			// Bookmarks are stored only with whole transactions, so every start is at a First chunk.
			if tx, err = db.BeginTx(ctx, nil); err != nil {
				return err
			}
		}
		for _, op := range t.Ops {
			failpoint.Hit(ctx, "pgapply.apply-op") // cdcd's crash tests die here (a no-op in release builds)
			if err := a.apply(ctx, tx, op); err != nil {
				return fmt.Errorf("applying %s (%s/%d@%d): %w", op.ID(), op.Topic, op.Partition, op.Offset, err)
			}
		}
		if !t.Last {
			failpoint.Hit(ctx, "pgapply.after-chunk")
			return nil // a large transaction continues in the next chunk, in the same target transaction
		}
		if err := store.Save(ctx, tx, saved, t.Bookmark); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO cdcd_applied (consumer, txn, pos, bookmark) VALUES ($1, $2, $3, $4)",
			name, t.ID, t.Position, t.Bookmark.String()); err != nil {
			return err
		}
		err := tx.Commit()
		tx = nil
		if err == nil {
			b := t.Bookmark
			saved = &b
		}
		return err
	})
}

type envelope struct {
	Before map[string]json.RawMessage `json:"before"`
	After  map[string]json.RawMessage `json:"after"`
	Op     string                     `json:"op"`
	Source struct {
		Schema string `json:"schema"`
		Table  string `json:"table"`
	} `json:"source"`
}

type applier struct {
	db    *sql.DB
	types map[string]map[string]string // table -> column -> udt_name
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (a *applier) apply(ctx context.Context, tx *sql.Tx, op tcc.Op) error {
	if op.Value == nil {
		return nil // a tombstone: the delete before it did the work
	}
	var e envelope
	if err := json.Unmarshal(op.Value, &e); err != nil {
		return fmt.Errorf("not a JSON KCOP envelope: %w", err)
	}
	table := quote(e.Source.Schema) + "." + quote(e.Source.Table)
	types, err := a.columnTypes(ctx, e.Source.Schema, e.Source.Table)
	if err != nil {
		return err
	}
	var key map[string]json.RawMessage
	if op.Key != nil {
		if err := json.Unmarshal(op.Key, &key); err != nil {
			return fmt.Errorf("key is not a JSON object: %w", err)
		}
	}
	keyCols := sortedKeys(key)
	switch e.Op {
	case "c", "r", "u":
		cols := sortedKeys(e.After)
		row, err := pgJSON(e.After, types)
		if err != nil {
			return err
		}
		q := make([]string, len(cols))
		set := make([]string, len(cols))
		for i, c := range cols {
			q[i] = quote(c)
			set[i] = quote(c) + " = EXCLUDED." + quote(c)
		}
		sqlText := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1::jsonb)",
			table, strings.Join(q, ", "), strings.Join(q, ", "), table)
		if len(keyCols) > 0 {
			kq := make([]string, len(keyCols))
			for i, c := range keyCols {
				kq[i] = quote(c)
			}
			sqlText += fmt.Sprintf(" ON CONFLICT (%s) DO UPDATE SET %s", strings.Join(kq, ", "), strings.Join(set, ", "))
		}
		_, err = tx.ExecContext(ctx, sqlText, row)
		return err
	case "d":
		if len(keyCols) == 0 {
			return errors.New("a delete without a key cannot be applied")
		}
		k, err := pgJSON(key, types)
		if err != nil {
			return err
		}
		conds := make([]string, len(keyCols))
		for i, c := range keyCols {
			conds[i] = fmt.Sprintf("t.%s = k.%s", quote(c), quote(c))
		}
		_, err = tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s t USING jsonb_populate_record(NULL::%s, $1::jsonb) k WHERE %s",
			table, table, strings.Join(conds, " AND ")), k)
		return err
	case "t":
		_, err := tx.ExecContext(ctx, "TRUNCATE "+table)
		return err
	}
	return fmt.Errorf("unknown op %q", e.Op)
}

func (a *applier) columnTypes(ctx context.Context, schema, table string) (map[string]string, error) {
	k := schema + "." + table
	if t, ok := a.types[k]; ok {
		return t, nil
	}
	rows, err := a.db.QueryContext(ctx, `SELECT column_name, udt_name FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2`, schema, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := map[string]string{}
	for rows.Next() {
		var c, u string
		if err := rows.Scan(&c, &u); err != nil {
			return nil, err
		}
		t[c] = u
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("the target has no table %s; create it first", k)
	}
	a.types[k] = t
	return t, rows.Err()
}

// pgJSON rewrites the envelope's values where PostgreSQL's JSON input differs: bytea arrives as
// base64 and must be given as \x hex.
func pgJSON(row map[string]json.RawMessage, types map[string]string) (string, error) {
	out := make(map[string]json.RawMessage, len(row))
	for c, v := range row {
		if types[c] == "bytea" && string(v) != "null" {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return "", fmt.Errorf("column %s: %w", c, err)
			}
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return "", fmt.Errorf("column %s: %w", c, err)
			}
			v, _ = json.Marshal(`\x` + hex.EncodeToString(b))
		}
		out[c] = v
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
