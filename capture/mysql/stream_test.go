package mysql

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"

	"github.com/cdcd-dev/cdcd/change"
)

// recorded collects a stream's calls as text.
type recorded struct{ calls []string }

func (r *recorded) Begin(_ context.Context, t *change.Txn) error {
	r.calls = append(r.calls, "begin "+t.ID+" at "+t.Position)
	return nil
}

func (r *recorded) Change(_ context.Context, c *change.Change) error {
	var vals []string
	for _, row := range []change.Row{c.Before, c.After} {
		for _, v := range row {
			vals = append(vals, fmt.Sprint(v.V))
		}
	}
	r.calls = append(r.calls, fmt.Sprintf("%s %s %v key=%v", c.Op, c.Table.QualifiedName(), vals, c.KeyChanged))
	return nil
}

func (r *recorded) Commit(_ context.Context, c *change.Commit) error {
	r.calls = append(r.calls, fmt.Sprintf("commit %s end %s (%d)", c.Txn.ID, c.End, c.Changes))
	return nil
}

func (r *recorded) Progress(_ context.Context, end, _ string) error {
	r.calls = append(r.calls, "progress "+end)
	return nil
}

const (
	uuidA = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	uuidB = "86ca4a2e-71ca-11e1-9e33-c80aa9429562"
)

func gtidEvent(t *testing.T, sid string, gno int64) *replication.GTIDEvent {
	t.Helper()
	u := uuid.MustParse(sid)
	return &replication.GTIDEvent{SID: u[:], GNO: gno}
}

func ev(pos, size uint32, et replication.EventType, e replication.Event) *replication.BinlogEvent {
	return &replication.BinlogEvent{Header: &replication.EventHeader{LogPos: pos, EventSize: size, EventType: et, Timestamp: 1700000000}, Event: e}
}

// TestMySQLFlavourStream: MySQL's GTID events (server uuid and transaction number), BEGIN, a table
// map with full metadata, rows and XID become one transaction whose end is the executed GTID set
// with the file and offset; DDL and other tables' transactions are progress; GTIDs of a second
// server join the set.
func TestMySQLFlavourStream(t *testing.T) {
	gset, err := gomysql.ParseGTIDSet(gomysql.MySQLFlavor, uuidA+":1-5")
	if err != nil {
		t.Fatal(err)
	}
	r := &Reader{flavor: FlavorMySQL, tables: map[string]bool{"shop.orders": true}, charsets: map[uint64]string{255: "utf8mb4"}}
	h := &recorded{}
	s := &stream{r: r, h: h, gset: gset, useGTID: true, tables: map[uint64]*table{}}
	orders := &replication.TableMapEvent{TableID: 7, Schema: []byte("shop"), Table: []byte("orders"), ColumnCount: 3,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONGLONG, gomysql.MYSQL_TYPE_VARCHAR, gomysql.MYSQL_TYPE_JSON},
		ColumnMeta: []uint16{0, 80, 4}, ColumnName: [][]byte{[]byte("id"), []byte("note"), []byte("doc")},
		PrimaryKey: []uint64{0}, SignednessBitmap: []byte{0x80}, DefaultCharset: []uint64{255}}
	other := &replication.TableMapEvent{TableID: 8, Schema: []byte("shop"), Table: []byte("audit"), ColumnCount: 1,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONG}, ColumnMeta: []uint16{0}, ColumnName: [][]byte{[]byte("id")}}
	events := []*replication.BinlogEvent{
		ev(0, 0, replication.ROTATE_EVENT, &replication.RotateEvent{NextLogName: []byte("binlog.000002"), Position: 4}),
		ev(300, 79, replication.GTID_EVENT, gtidEvent(t, uuidA, 6)),
		ev(380, 80, replication.QUERY_EVENT, &replication.QueryEvent{Query: []byte("BEGIN")}),
		ev(440, 60, replication.TABLE_MAP_EVENT, orders),
		ev(500, 60, replication.WRITE_ROWS_EVENTv2, &replication.RowsEvent{TableID: 7, Table: orders,
			Rows: [][]any{{uint64(18446744073709551615), "first", `{"a": 1}`}}}),
		ev(560, 60, replication.UPDATE_ROWS_EVENTv2, &replication.RowsEvent{TableID: 7, Table: orders,
			Rows: [][]any{{uint64(18446744073709551615), "first", `{"a": 1}`}, {uint64(1), "first", `{"a": 1}`}}}),
		ev(591, 31, replication.XID_EVENT, &replication.XIDEvent{XID: 99}),
		// DDL: its own GTID, no BEGIN, no XID.
		ev(670, 79, replication.GTID_EVENT, gtidEvent(t, uuidA, 7)),
		ev(760, 90, replication.QUERY_EVENT, &replication.QueryEvent{Query: []byte("ALTER TABLE orders ADD COLUMN x INT")}),
		// A transaction of a table cdcd does not capture, from another server.
		ev(839, 79, replication.GTID_EVENT, gtidEvent(t, uuidB, 1)),
		ev(919, 80, replication.QUERY_EVENT, &replication.QueryEvent{Query: []byte("BEGIN")}),
		ev(970, 51, replication.TABLE_MAP_EVENT, other),
		ev(1010, 40, replication.WRITE_ROWS_EVENTv2, &replication.RowsEvent{TableID: 8, Table: other, Rows: [][]any{{int32(1)}}}),
		ev(1041, 31, replication.XID_EVENT, &replication.XIDEvent{XID: 100}),
	}
	for _, e := range events {
		if err := s.event(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"begin " + uuidA + ":6 at binlog.000002:221",
		"c shop.orders [18446744073709551615 first {\"a\": 1}] key=false",
		"u shop.orders [18446744073709551615 first {\"a\": 1} 1 first {\"a\": 1}] key=true",
		"commit " + uuidA + ":6 end " + uuidA + ":1-6;binlog.000002:591 (2)",
		"progress " + uuidA + ":1-7;binlog.000002:760",
		"progress " + uuidA + ":1-7," + uuidB + ":1;binlog.000002:1041",
	}
	if !slices.Equal(h.calls, want) {
		t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(h.calls, "\n  "), strings.Join(want, "\n  "))
	}
	if s.tables[7].t.Columns[0].Type != "bigint unsigned" || s.tables[7].t.Columns[2].Type != "json" {
		t.Errorf("column types %+v", s.tables[7].t.Columns)
	}
}

// TestStreamWithoutGTIDs: with GTIDs off a transaction is named by where it begins, and ends at a
// file and offset only.
func TestStreamWithoutGTIDs(t *testing.T) {
	gset, _ := gomysql.ParseGTIDSet(gomysql.MySQLFlavor, "")
	r := &Reader{flavor: FlavorMySQL, tables: map[string]bool{}, charsets: map[uint64]string{}}
	h := &recorded{}
	s := &stream{r: r, h: h, gset: gset, tables: map[uint64]*table{}}
	tm := &replication.TableMapEvent{TableID: 3, Schema: []byte("app"), Table: []byte("t"), ColumnCount: 1,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONG}, ColumnMeta: []uint16{0}, ColumnName: [][]byte{[]byte("id")}, PrimaryKey: []uint64{0}}
	for _, e := range []*replication.BinlogEvent{
		ev(0, 0, replication.ROTATE_EVENT, &replication.RotateEvent{NextLogName: []byte("binlog.000009")}),
		ev(200, 79, replication.ANONYMOUS_GTID_EVENT, &replication.GenericEvent{}),
		ev(280, 80, replication.QUERY_EVENT, &replication.QueryEvent{Query: []byte("BEGIN")}),
		ev(330, 50, replication.TABLE_MAP_EVENT, tm),
		ev(370, 40, replication.DELETE_ROWS_EVENTv2, &replication.RowsEvent{TableID: 3, Table: tm, Rows: [][]any{{int32(5)}}}),
		ev(401, 31, replication.XID_EVENT, &replication.XIDEvent{}),
	} {
		if err := s.event(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"begin binlog.000009:200 at binlog.000009:200", "d app.t [5] key=false", "commit binlog.000009:200 end binlog.000009:401 (1)"}
	if !slices.Equal(h.calls, want) {
		t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(h.calls, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestTableMapWithoutMetadataIsRefused: without binlog_row_metadata=FULL there are no column names,
// and cdcd stops, naming the setting, rather than guessing.
func TestTableMapWithoutMetadataIsRefused(t *testing.T) {
	r := &Reader{flavor: FlavorMariaDB, tables: map[string]bool{}, charsets: map[uint64]string{}}
	s := &stream{r: r, h: &recorded{}, tables: map[uint64]*table{}}
	err := s.tableMap(&replication.TableMapEvent{TableID: 3, Schema: []byte("app"), Table: []byte("t"), ColumnCount: 1,
		ColumnType: []byte{gomysql.MYSQL_TYPE_LONG}, ColumnMeta: []uint16{0}})
	if err == nil || !strings.Contains(err.Error(), "binlog_row_metadata=FULL") {
		t.Fatalf("err = %v", err)
	}
}
