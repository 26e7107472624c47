package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestStackPgoutputStreamsInsert proves the stack's PostgreSQL gives what capture needs: a logical
// slot with pgoutput, created over a replication connection as the cdc role, streams a committed
// insert with its relation and values.
func TestStackPgoutputStreamsInsert(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	suffix := fmt.Sprintf("%06d", rand.IntN(1_000_000))
	table, pub, slot := "stack_probe_"+suffix, "stack_probe_pub_"+suffix, "stack_probe_slot_"+suffix
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	mustExec(t, conn, fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, note text, amount numeric(20,4))", table))
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	mustExec(t, conn, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pub, table))
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP PUBLICATION IF EXISTS "+pub) })

	rc, err := ConnectReplication(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(context.Background())
	created, err := pglogrepl.CreateReplicationSlot(ctx, rc, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Temporary: true})
	if err != nil {
		t.Fatalf("creating a pgoutput slot: %v", err)
	}
	start, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(ctx, rc, slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + pub + "'"},
	})
	if err != nil {
		t.Fatalf("starting replication: %v", err)
	}
	mustExec(t, conn, fmt.Sprintf("INSERT INTO %s VALUES (1, 'hello', 12.5000)", table))

	var rel *pglogrepl.RelationMessage
	var sawBegin bool
	for {
		msg, err := rc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receiving: %v (began=%v relation=%v)", err, sawBegin, rel != nil)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			t.Fatalf("unexpected message %T", msg)
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			continue
		case pglogrepl.XLogDataByteID:
		default:
			t.Fatalf("unexpected copy data kind %q", cd.Data[0])
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		lm, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		switch m := lm.(type) {
		case *pglogrepl.BeginMessage:
			sawBegin = true
		case *pglogrepl.RelationMessage:
			rel = m
		case *pglogrepl.InsertMessage:
			if !sawBegin || rel == nil || m.RelationID != rel.RelationID {
				t.Fatalf("insert before its begin or relation (began=%v relation=%+v)", sawBegin, rel)
			}
			if rel.RelationName != table || len(rel.Columns) != 3 || rel.Columns[1].Name != "note" {
				t.Fatalf("relation = %s %+v", rel.RelationName, rel.Columns)
			}
			got := []string{string(m.Tuple.Columns[0].Data), string(m.Tuple.Columns[1].Data), string(m.Tuple.Columns[2].Data)}
			want := []string{"1", "hello", "12.5000"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("insert values = %q, want %q", got, want)
			}
			return
		}
	}
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
