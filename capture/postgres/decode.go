package postgres

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/change"
)

// sessionSettings pin how the server renders values as text, on the replication connection and on
// the snapshot connection alike, so that a value decodes the same whichever path it takes and does
// not depend on the server's or role's defaults.
var sessionSettings = map[string]string{
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"client_encoding":    "UTF8",
}

// applicationName starts the application_name cdcd's connections carry (followed by the process
// id), so that pg_stat_activity, pg_stat_replication and cdcd validate can tell which process holds
// a slot.
const applicationName = "cdcd"

// relation is what the stream knows of a table as of its latest Relation message.
type relation struct {
	table *change.Table
	// oids are the type OIDs to decode each column with (a domain's base type).
	oids []uint32
	// identity is pgoutput's replica identity: 'd' default, 'f' full, 'i' index, 'n' nothing.
	identity byte
	// binary says how each column's values are read when they arrive in binary form.
	binary []binaryClass
	// textOf renders a binary value of a binaryViaServer column as the server's text; nil where no
	// server is at hand.
	textOf func(oid uint32, data []byte) ([]byte, error)
}

// typeInfo is what pg_type says of a column's type.
type typeInfo struct {
	name    string
	baseOID uint32 // a domain's base type; 0 otherwise
	enum    bool   // the type (or a domain's base type) is an enum
}

// newRelation combines a Relation message (the shape of the rows at this WAL position) with the
// names of the column types. The key columns are the replica identity columns the message flags
// (under DEFAULT the primary key at that position, under USING INDEX the index's columns): they are
// what the old rows of updates and deletes carry. Under FULL the message flags every column and
// under NOTHING none, so there primaryKey (today's catalog) names them, as far as they are columns
// of the message.
func newRelation(database string, m *pglogrepl.RelationMessage, types map[uint32]typeInfo, primaryKey []string, tm *pgtype.Map) *relation {
	t := &change.Table{Database: database, Schema: m.Namespace, Name: m.RelationName, FullBeforeImage: m.ReplicaIdentity == 'f'}
	rel := &relation{table: t, identity: m.ReplicaIdentity, oids: make([]uint32, len(m.Columns)), binary: make([]binaryClass, len(m.Columns))}
	for i, c := range m.Columns {
		col := change.Column{Name: c.Name}
		oid := c.DataType
		info, known := types[c.DataType]
		if known && info.baseOID != 0 {
			oid = info.baseOID
		}
		rel.oids[i] = oid
		rel.binary[i] = classify(tm, oid, info.enum)
		switch {
		case known:
			col.Type = info.name
		default:
			if typ, ok := tm.TypeForOID(c.DataType); ok {
				col.Type = typ.Name
			} else {
				col.Type = strconv.FormatUint(uint64(c.DataType), 10)
			}
		}
		switch m.ReplicaIdentity {
		case 'f', 'n':
			col.Key = slices.Contains(primaryKey, c.Name)
		default:
			col.Key = c.Flags&1 == 1
		}
		if col.Key {
			t.KeyIndexes = append(t.KeyIndexes, i)
		}
		t.Columns = append(t.Columns, col)
	}
	return rel
}

// decodeTuple turns a pgoutput tuple into a Row. Values arrive in text form ('t') or binary form
// ('b'), which decode to the same values; 'n' is NULL and 'u' an unchanged TOAST value, which is
// filled from fill (a complete old row) when there is one.
func decodeTuple(tm *pgtype.Map, sl *slab, rel *relation, tuple *pglogrepl.TupleData, fill change.Row) (change.Row, error) {
	if tuple == nil {
		return nil, nil
	}
	if len(tuple.Columns) != len(rel.oids) {
		return nil, fmt.Errorf("%s: tuple has %d columns, relation has %d", rel.table.QualifiedName(), len(tuple.Columns), len(rel.oids))
	}
	row := sl.row(len(tuple.Columns))
	for i, col := range tuple.Columns {
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[i] = change.Value{Kind: change.Null}
		case pglogrepl.TupleDataTypeToast:
			if fill != nil && i < len(fill) && (fill[i].Kind == change.Present || fill[i].Kind == change.Null) {
				row[i] = fill[i]
			} else {
				row[i] = change.Value{Kind: change.Unchanged}
			}
		case pglogrepl.TupleDataTypeText:
			v, err := decodeText(tm, sl, rel.oids[i], col.Data)
			if err != nil {
				return nil, fmt.Errorf("%s.%s (%s): %w", rel.table.QualifiedName(), rel.table.Columns[i].Name, rel.table.Columns[i].Type, err)
			}
			row[i] = change.Value{V: v}
		case pglogrepl.TupleDataTypeBinary:
			v, err := rel.decodeBinary(tm, sl, i, col.Data)
			if err != nil {
				return nil, fmt.Errorf("%s.%s (%s, binary): %w", rel.table.QualifiedName(), rel.table.Columns[i].Name, rel.table.Columns[i].Type, err)
			}
			row[i] = change.Value{V: v}
		default:
			return nil, fmt.Errorf("%s.%s: tuple data kind %q is not supported", rel.table.QualifiedName(), rel.table.Columns[i].Name, col.DataType)
		}
	}
	return row, nil
}

// decodeBinary decodes column i's binary value; for a type cdcd does not read from binary, through
// the server's text form.
func (rel *relation) decodeBinary(tm *pgtype.Map, sl *slab, i int, data []byte) (any, error) {
	c := binaryViaServer
	if i < len(rel.binary) {
		c = rel.binary[i]
	}
	if c != binaryViaServer {
		return decodeBinaryAs(tm, sl, c, rel.oids[i], data)
	}
	if rel.textOf == nil {
		return nil, fmt.Errorf("cdcd does not read this type from binary; set source.postgres.binary: off")
	}
	text, err := rel.textOf(rel.oids[i], data)
	if err != nil {
		return nil, fmt.Errorf("rendering the binary value as text on the server (set source.postgres.binary: off to stream text): %w", err)
	}
	return decodeText(tm, sl, rel.oids[i], text)
}

// keyOnly marks every non-key column of an old tuple sent under REPLICA IDENTITY DEFAULT or INDEX as
// absent: pgoutput sends them as NULL, but they are not part of the image.
func keyOnly(rel *relation, row change.Row) {
	isKey := make([]bool, len(row))
	for _, i := range rel.table.KeyIndexes {
		if i < len(isKey) {
			isKey[i] = true
		}
	}
	for i := range row {
		if !isKey[i] {
			row[i] = change.Value{Kind: change.Absent}
		}
	}
}

// decodeText decodes one value in PostgreSQL's text form (with sessionSettings in force) into the
// Go type the change package documents for it. Data is copied (into sl): the caller's buffer is
// reused.
func decodeText(tm *pgtype.Map, sl *slab, oid uint32, data []byte) (any, error) {
	s := view(data)
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("integer %q: %w", s, err)
		}
		return boxWord(sl, n), nil
	case pgtype.NumericOID:
		return boxString(sl, change.Decimal(sl.string(data))), nil
	case pgtype.Float4OID:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return nil, fmt.Errorf("real %q: %w", s, err)
		}
		return boxWord(sl, float32(f)), nil
	case pgtype.Float8OID:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("double precision %q: %w", s, err)
		}
		return boxWord(sl, f), nil
	case pgtype.BoolOID:
		switch s {
		case "t":
			return true, nil
		case "f":
			return false, nil
		}
		return nil, fmt.Errorf("boolean %q", s)
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.QCharOID, pgtype.UUIDOID:
		return boxString(sl, sl.string(data)), nil
	case pgtype.ByteaOID:
		var b []byte
		if err := tm.Scan(oid, pgtype.TextFormatCode, data, &b); err != nil {
			return nil, fmt.Errorf("bytea: %w", err)
		}
		return b, nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		return boxString(sl, change.JSON(sl.string(data))), nil
	case pgtype.DateOID:
		return boxString(sl, change.Date(sl.string(data))), nil
	case pgtype.TimeOID:
		return boxString(sl, change.Time(sl.string(data))), nil
	case pgtype.TimetzOID:
		return boxString(sl, change.TimeTZ(sl.string(data))), nil
	case pgtype.TimestampOID:
		if s == "infinity" || s == "-infinity" {
			return boxString(sl, change.Timestamp(sl.string(data))), nil
		}
		var buf [64]byte
		b := append(buf[:0], data...)
		if i := slices.Index(b, ' '); i >= 0 {
			b[i] = 'T'
		}
		return boxString(sl, change.Timestamp(sl.string(b))), nil
	case pgtype.TimestamptzOID:
		if s == "infinity" || s == "-infinity" || strings.HasSuffix(s, " BC") {
			return boxString(sl, change.Text(sl.string(data))), nil
		}
		var ts time.Time
		if err := tm.Scan(oid, pgtype.TextFormatCode, data, &ts); err != nil {
			return nil, fmt.Errorf("timestamptz %q: %w", s, err)
		}
		return sl.boxInstant(ts.UTC()), nil
	case pgtype.IntervalOID:
		var iv pgtype.Interval
		if err := tm.Scan(oid, pgtype.TextFormatCode, data, &iv); err != nil {
			return nil, fmt.Errorf("interval %q: %w", s, err)
		}
		return sl.boxInterval(change.Interval{Months: iv.Months, Days: iv.Days, Microseconds: iv.Microseconds}), nil
	}
	if typ, ok := tm.TypeForOID(oid); ok {
		if ac, ok := typ.Codec.(*pgtype.ArrayCodec); ok {
			return decodeArray(tm, sl, oid, ac.ElementType.OID, data)
		}
	}
	// Enums, domains over unknown types, geometric, network, range and user-defined types: the
	// server's text form, unchanged.
	return boxString(sl, change.Text(sl.string(data))), nil
}

func decodeArray(tm *pgtype.Map, sl *slab, oid, elemOID uint32, data []byte) (any, error) {
	var arr pgtype.Array[*string]
	if err := tm.Scan(oid, pgtype.TextFormatCode, data, &arr); err != nil {
		return nil, fmt.Errorf("array %q: %w", data, err)
	}
	flat := make([]any, len(arr.Elements))
	for i, e := range arr.Elements {
		if e == nil {
			continue
		}
		v, err := decodeText(tm, sl, elemOID, []byte(*e))
		if err != nil {
			return nil, fmt.Errorf("array element %d: %w", i, err)
		}
		flat[i] = v
	}
	if len(arr.Dims) <= 1 {
		return flat, nil
	}
	return nest(flat, arr.Dims), nil
}

// nest shapes a flat, row-major element list into nested slices by dims.
func nest(flat []any, dims []pgtype.ArrayDimension) []any {
	if len(dims) == 1 {
		return flat
	}
	n := int(dims[0].Length)
	out := make([]any, n)
	size := len(flat) / max(n, 1)
	for i := range n {
		out[i] = nest(flat[i*size:(i+1)*size], dims[1:])
	}
	return out
}
