// Package change is the source-neutral vocabulary between capture, the KCOPs and the writer: a
// transaction arrives as one Begin, its Changes in source order, and one Commit, never as a whole
// slice, so that a transaction of any size flows through in bounded memory.
//
// A value in a row image is one of four things, and the difference matters: a value (possibly a
// typed Go value such as int64 or time.Time), SQL NULL, a value the source did not send because it
// was unchanged (PostgreSQL's unchanged TOAST values), or a column absent from the image (a before
// image that holds only the key columns). Consumers must never read the last two as NULL.
package change

import (
	"fmt"
	"reflect"
	"time"
)

// Op is the kind of a row change, spelled as in Debezium's envelope.
type Op byte

const (
	Insert   Op = 'c'
	Update   Op = 'u'
	Delete   Op = 'd'
	Read     Op = 'r' // a row of an initial snapshot
	Truncate Op = 't'
)

func (o Op) String() string {
	switch o {
	case Insert, Update, Delete, Read, Truncate:
		return string(rune(o))
	}
	return fmt.Sprintf("Op(%d)", byte(o))
}

// Column describes one column of a table as of the change.
type Column struct {
	Name string
	// Type is the source's type name, e.g. "numeric", "timestamptz", "_int4", "mood".
	Type string
	// Key is true for the columns of the primary key (or, lacking one, the replica identity index).
	Key bool
}

// Table describes a captured table as of the change; a new *Table replaces the old one when the
// source's schema changes, so a change's Table is always the shape of its rows.
type Table struct {
	// Database is the source database (PostgreSQL's database, MySQL's is Schema).
	Database string
	Schema   string
	Name     string
	Columns  []Column
	// KeyIndexes lists the positions of the key columns in Columns, in key order.
	KeyIndexes []int
	// FullBeforeImage is true when updates and deletes carry every column of the old row.
	FullBeforeImage bool
}

// QualifiedName is schema.name.
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Kind tells what a Value holds.
type Kind uint8

const (
	// Present: V holds the value.
	Present Kind = iota
	// Null: SQL NULL.
	Null
	// Unchanged: the source did not send the value because the change did not touch it
	// (PostgreSQL unchanged TOAST); its value is unknown here.
	Unchanged
	// Absent: the column is not part of this image (e.g. a key-only before image).
	Absent
)

// Value is one column's value in a row image. V's dynamic type depends on the source type:
// int64, uint64 (unsigned integers too large for int64's range, e.g. MySQL BIGINT UNSIGNED),
// float32, float64, bool, string, []byte, time.Time, Decimal, JSON, Interval, Time, Date,
// Timestamp, []any for arrays (elements typed as above, nil for NULL), or Text for a type cdcd
// does not decode.
type Value struct {
	Kind Kind
	V    any
}

// Row is a row image, one Value per column of its Table, in column order.
type Row []Value

// Decimal is an exact decimal number in its canonical text form, e.g. "12.5000", "NaN", "-Infinity".
type Decimal string

// JSON is a JSON document as the source rendered it.
type JSON string

// Date is a calendar date "2006-01-02" (or "infinity"/"-infinity").
type Date string

// Time is a time of day without zone, "15:04:05.999999"; a TimeTZ carries its offset.
type Time string

// TimeTZ is a time of day with a zone offset, "15:04:05.999999+02".
type TimeTZ string

// Timestamp is a date and time without zone, "2006-01-02T15:04:05.999999" (or infinity).
type Timestamp string

// Interval is a duration with calendar parts, kept exact.
type Interval struct {
	Months       int32
	Days         int32
	Microseconds int64
}

// Text is a value of a type cdcd does not decode, in the source's text form.
type Text string

// Txn identifies a source transaction.
type Txn struct {
	// ID is the source's transaction id (PostgreSQL xid, MySQL/MariaDB GTID).
	ID string
	// Position orders transactions: it is the commit's position in the source log, known at Begin
	// (PostgreSQL: the commit record's LSN). Ordering headers carry it.
	Position string
	// CommitTime is when the source committed the transaction (zero for snapshots).
	CommitTime time.Time
	// Snapshot marks a transaction of snapshot reads: the pseudo-transaction of a source's whole
	// initial snapshot, or one chunk of a table's copy (Copy says which).
	Snapshot bool
	// Copy describes the chunk of a table a snapshot transaction copies; nil otherwise.
	Copy *Copy
}

// Copy is the part of one table's snapshot that a snapshot transaction carries: chunk Chunk (from
// 1) of Table, after which Rows rows of it are copied in all; Complete marks the table's last chunk.
type Copy struct {
	Table    string
	Chunk    int64
	Rows     int64
	Complete bool
}

// Change is one row change (or a truncate) with its context.
type Change struct {
	Op    Op
	Table *Table
	// Before is the old row for updates and deletes when the source sent one; nil otherwise.
	Before Row
	// After is the new row for inserts, updates and snapshot reads; nil otherwise.
	After Row
	// KeyChanged is true for an update that changed the key; Before then holds the old key.
	KeyChanged bool
	// Txn is the transaction this change belongs to.
	Txn *Txn
	// Index is the change's position in its transaction, from 0.
	Index int64
}

// Commit ends a transaction.
type Commit struct {
	Txn *Txn
	// End is the position just after the transaction's commit: resuming after it starts with the
	// next transaction (PostgreSQL: the end LSN of the commit record).
	End string
	// Changes is how many changes the transaction held.
	Changes int64
	// State is what the source needs, besides End, to resume after this transaction (a snapshot's
	// progress); the commit stream records the latest with each durable position. A source that
	// keeps state sends all of it with every Commit; "" means none.
	State string
}

// KeyDiffers reports whether an update moved the row to another key: a key column whose value
// differs between the images. Key values the source left out of an image (absent, or unchanged and
// not sent) are not compared, since they cannot tell.
func (t *Table) KeyDiffers(before, after Row) bool {
	for _, i := range t.KeyIndexes {
		b, a := before[i], after[i]
		if b.Kind == Absent || a.Kind == Unchanged || b.Kind == Unchanged {
			continue
		}
		if b.Kind != a.Kind || !reflect.DeepEqual(b.V, a.V) {
			return true
		}
	}
	return false
}
