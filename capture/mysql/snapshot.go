package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
)

// snapshotColumn is how one column is selected and rendered in the initial snapshot, so that a row
// read by SELECT carries exactly the values the binlog would carry for it.
type snapshotColumn struct {
	name     string
	dataType string // information_schema.COLUMNS.DATA_TYPE
	unsigned bool
	expr     string // the select-list expression
}

// snapshot copies the captured tables inside one consistent read and returns the binlog position
// that read is consistent with: the stream continues from exactly there, no gap, no overlap.
//
// MariaDB gives that position without a global lock: START TRANSACTION WITH CONSISTENT SNAPSHOT
// sets binlog_snapshot_file and binlog_snapshot_position to the binlog position of the read view.
// MySQL has no such status; there cdcd takes FLUSH TABLES WITH READ LOCK only for the moment it
// takes to open the read view and read the position.
func (r *Reader) snapshot(ctx context.Context, h capture.Handler) (Position, error) {
	conn, err := connect(ctx, r.cfg)
	if err != nil {
		return Position{}, err
	}
	defer conn.Close()
	for _, q := range []string{"SET SESSION time_zone = '+00:00'", "SET NAMES utf8mb4",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"} {
		if _, err := conn.Execute(q); err != nil {
			return Position{}, fmt.Errorf("snapshot: %s: %w", q, err)
		}
	}
	var pos Position
	if r.flavor == FlavorMariaDB {
		if _, err := conn.Execute("START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
			return Position{}, fmt.Errorf("snapshot: START TRANSACTION WITH CONSISTENT SNAPSHOT: %w", err)
		}
		res, err := conn.Execute("SHOW STATUS WHERE Variable_name IN ('binlog_snapshot_file', 'binlog_snapshot_position')")
		if err != nil {
			return Position{}, fmt.Errorf("snapshot: reading binlog_snapshot_file/position: %w", err)
		}
		for i := range res.RowNumber() {
			name, _ := res.GetString(i, 0)
			value, _ := res.GetString(i, 1)
			switch strings.ToLower(name) {
			case "binlog_snapshot_file":
				pos.File = strings.Clone(value)
			case "binlog_snapshot_position":
				off, err := strconv.ParseUint(value, 10, 32)
				if err != nil {
					return Position{}, fmt.Errorf("snapshot: binlog_snapshot_position %q: %w", value, err)
				}
				pos.Offset = uint32(off)
			}
		}
		if pos.File == "" {
			return Position{}, fault.Terminal("snapshot: the server gives no binlog_snapshot_file; is the binary log on?")
		}
		res, err = conn.Execute("SELECT BINLOG_GTID_POS(?, ?)", pos.File, pos.Offset)
		if err != nil {
			return Position{}, fmt.Errorf("snapshot: BINLOG_GTID_POS: %w", err)
		}
		g, _ := res.GetString(0, 0)
		pos.GTIDs = strings.Clone(g)
	} else {
		if pos, err = r.mysqlSnapshotStart(conn); err != nil {
			return Position{}, err
		}
	}
	if !r.gtids {
		pos.GTIDs = ""
	}
	r.log.Info("snapshot: copying the captured tables", "consistent_with", pos.String())

	tables, err := r.snapshotTables(conn)
	if err != nil {
		return Position{}, err
	}
	txn := &change.Txn{ID: "snapshot", Position: pos.String(), Snapshot: true}
	if err := h.Begin(ctx, txn); err != nil {
		return Position{}, err
	}
	var index int64
	for _, qualified := range tables {
		db, name, _ := strings.Cut(qualified, ".")
		n, err := r.copyTable(ctx, conn, db, name, txn, &index, h)
		if err != nil {
			return Position{}, fmt.Errorf("snapshot of %s: %w", qualified, err)
		}
		r.log.Info("snapshot: table copied", "table", qualified, "rows", n)
	}
	if _, err := conn.Execute("COMMIT"); err != nil {
		return Position{}, fmt.Errorf("snapshot: COMMIT: %w", err)
	}
	if err := h.Commit(ctx, &change.Commit{Txn: txn, End: pos.String(), Changes: index}); err != nil {
		return Position{}, err
	}
	return pos, nil
}

func (r *Reader) mysqlSnapshotStart(conn *client.Conn) (Position, error) {
	if _, err := conn.Execute("FLUSH TABLES WITH READ LOCK"); err != nil {
		return Position{}, fmt.Errorf("snapshot: FLUSH TABLES WITH READ LOCK (needs RELOAD): %w", err)
	}
	unlock := func() { _, _ = conn.Execute("UNLOCK TABLES") }
	if _, err := conn.Execute("START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		unlock()
		return Position{}, fmt.Errorf("snapshot: START TRANSACTION WITH CONSISTENT SNAPSHOT: %w", err)
	}
	res, err := conn.Execute("SHOW MASTER STATUS")
	if err != nil || res.RowNumber() == 0 {
		unlock()
		return Position{}, fmt.Errorf("snapshot: SHOW MASTER STATUS: %v", err)
	}
	file, _ := res.GetString(0, 0)
	off, _ := res.GetUint(0, 1)
	gtids, _ := res.GetString(0, 4)
	unlock()
	return Position{File: strings.Clone(file), Offset: uint32(off), GTIDs: strings.ReplaceAll(strings.Clone(gtids), "\n", "")}, nil
}

// snapshotTables lists the captured base tables, sorted.
func (r *Reader) snapshotTables(conn *client.Conn) ([]string, error) {
	if len(r.cfg.Tables) > 0 {
		return slices.Sorted(slices.Values(r.cfg.Tables)), nil
	}
	res, err := conn.Execute(`SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
		WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
		ORDER BY TABLE_SCHEMA, TABLE_NAME`)
	if err != nil {
		return nil, fmt.Errorf("snapshot: listing tables: %w", err)
	}
	var out []string
	for i := range res.RowNumber() {
		db, _ := res.GetString(i, 0)
		name, _ := res.GetString(i, 1)
		out = append(out, db+"."+name)
	}
	return out, nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// errNoTable is describeForCopy's answer for a table that does not exist (or that the user may
// not see).
var errNoTable = errors.New("no such table")

// describeForCopy reads table db.name's columns as the binlog would describe them, its primary key,
// and how to select each column.
func (r *Reader) describeForCopy(conn *client.Conn, db, name string) (*change.Table, []snapshotColumn, error) {
	res, err := conn.Execute(`SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.NUMERIC_SCALE, c.DATETIME_PRECISION,
			(SELECT k.ORDINAL_POSITION FROM information_schema.KEY_COLUMN_USAGE k WHERE k.TABLE_SCHEMA = c.TABLE_SCHEMA
			 AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY')
		FROM information_schema.COLUMNS c WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION`, db, name)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the columns of %s.%s: %w", db, name, err)
	}
	if res.RowNumber() == 0 {
		return nil, nil, fmt.Errorf("table %s.%s: %w", db, name, errNoTable)
	}
	t := &change.Table{Database: db, Schema: db, Name: name, FullBeforeImage: true}
	cols := make([]snapshotColumn, res.RowNumber())
	keyOrder := map[int]int{}
	for i := range cols {
		cname, _ := res.GetString(i, 0)
		dataType, _ := res.GetString(i, 1)
		colType, _ := res.GetString(i, 2)
		scale, _ := res.GetInt(i, 3)
		keyPos, _ := res.GetInt(i, 5)
		c := snapshotColumn{name: strings.Clone(cname), dataType: strings.ToLower(dataType), unsigned: strings.Contains(strings.ToLower(colType), "unsigned")}
		c.expr = quoteIdent(c.name)
		switch c.dataType {
		case "float":
			// The float's exact value as a double: the text of a FLOAT is rounded to 6 digits.
			c.expr = "CAST(" + c.expr + " AS DOUBLE)"
		case "bit":
			c.expr = "CAST(" + c.expr + " AS UNSIGNED)"
		}
		typeName := binlogTypeName(c.dataType, c.unsigned, strings.ToLower(colType), scale)
		t.Columns = append(t.Columns, change.Column{Name: c.name, Type: typeName, Key: keyPos > 0})
		if keyPos > 0 {
			keyOrder[int(keyPos)] = i
		}
		cols[i] = c
	}
	for k := 1; k <= len(keyOrder); k++ {
		t.KeyIndexes = append(t.KeyIndexes, keyOrder[k])
	}
	return t, cols, nil
}

func (r *Reader) copyTable(ctx context.Context, conn *client.Conn, db, name string, txn *change.Txn, index *int64, h capture.Handler) (int64, error) {
	t, cols, err := r.describeForCopy(conn, db, name)
	if errors.Is(err, errNoTable) {
		return 0, fault.Terminal("table %s.%s does not exist or the user may not see it; create it or correct source.mysql.tables", db, name)
	}
	if err != nil {
		return 0, err
	}
	exprs := make([]string, len(cols))
	for i, c := range cols {
		exprs[i] = c.expr
	}
	q := "SELECT " + strings.Join(exprs, ", ") + " FROM " + quoteIdent(db) + "." + quoteIdent(name)
	var n int64
	var result gomysql.Result
	err = conn.ExecuteSelectStreaming(q, &result, func(values []gomysql.FieldValue) error {
		row := make(change.Row, len(values))
		for i := range values {
			v, err := cols[i].value(&values[i])
			if err != nil {
				return fmt.Errorf("column %s (%s): %w", cols[i].name, cols[i].dataType, err)
			}
			row[i] = v
		}
		failpoint.Hit(ctx, "mysql.snapshot-row")
		if err := h.Change(ctx, &change.Change{Op: change.Read, Table: t, After: row, Txn: txn, Index: *index}); err != nil {
			return err
		}
		*index++
		n++
		return nil
	}, nil)
	return n, err
}

// binlogTypeName is the type name a binlog table map gives the column (column.typeName), so that a
// table's snapshot rows and streamed rows are labelled alike.
func binlogTypeName(dataType string, unsigned bool, colType string, scale int64) string {
	u := ""
	if unsigned {
		u = " unsigned"
	}
	switch dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "float", "double":
		return dataType + u
	case "decimal":
		p, s, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(strings.Fields(colType)[0], "decimal("), ")"), ",")
		return fmt.Sprintf("decimal(%s,%s)%s", p, s, u)
	case "bit":
		return colType
	case "char", "varchar", "binary", "varbinary", "date", "time", "datetime", "timestamp", "year", "enum", "set", "json", "geometry":
		return dataType
	case "tinytext", "mediumtext", "longtext":
		return "text"
	case "tinyblob", "mediumblob", "longblob":
		return "blob"
	}
	return dataType
}

func (c snapshotColumn) value(fv *gomysql.FieldValue) (change.Value, error) {
	switch fv.Type {
	case gomysql.FieldValueTypeNull:
		return change.Value{Kind: change.Null}, nil
	case gomysql.FieldValueTypeSigned:
		if c.dataType == "bit" {
			return change.Value{V: uint64(fv.AsInt64())}, nil
		}
		return change.Value{V: fv.AsInt64()}, nil
	case gomysql.FieldValueTypeUnsigned:
		u := fv.AsUint64()
		if c.dataType == "bigint" || c.dataType == "bit" {
			return change.Value{V: u}, nil
		}
		return change.Value{V: int64(u)}, nil
	case gomysql.FieldValueTypeFloat:
		if c.dataType == "float" {
			return change.Value{V: float32(fv.AsFloat64())}, nil
		}
		return change.Value{V: fv.AsFloat64()}, nil
	}
	b := fv.AsString()
	s := string(b) // a copy: the driver reuses its buffer
	switch c.dataType {
	case "decimal":
		return change.Value{V: change.Decimal(s)}, nil
	case "date":
		return change.Value{V: change.Date(s)}, nil
	case "time":
		return change.Value{V: change.Time(s)}, nil
	case "datetime":
		return change.Value{V: change.Timestamp(strings.Replace(s, " ", "T", 1))}, nil
	case "timestamp":
		if strings.HasPrefix(s, "0000-00-00") {
			return change.Value{V: change.Timestamp(strings.Replace(s, " ", "T", 1))}, nil
		}
		ts, err := time.ParseInLocation("2006-01-02 15:04:05.999999", s, time.UTC)
		if err != nil {
			return change.Value{}, err
		}
		return change.Value{V: ts}, nil
	case "year":
		n, err := strconv.ParseInt(s, 10, 64)
		return change.Value{V: n}, err
	case "json":
		return change.Value{V: change.JSON(s)}, nil
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry":
		return change.Value{V: []byte(s)}, nil
	}
	return change.Value{V: s}, nil
}
