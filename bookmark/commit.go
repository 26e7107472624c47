package bookmark

import (
	"encoding/json"
	"fmt"
	"time"
)

// Headers cdcd puts on every data record it writes. Together with the commit stream they let a
// consumer put each record in its place in the source's history.
const (
	// HeaderTxn is the source transaction id.
	HeaderTxn = "cdcd.txn"
	// HeaderPos is the transaction's commit position in the source log, known before its first
	// change (PostgreSQL: the LSN of the commit record).
	HeaderPos = "cdcd.pos"
	// HeaderOp is the change's index within its transaction, from 0, in decimal; when a change
	// becomes several records, the second and later carry ".<n>" (n from 1) in the KCOP's order,
	// e.g. "7", "7.1", "7.2".
	HeaderOp = "cdcd.op"
	// HeaderGroup is the commit group (commit stream record) the record is written under, in decimal.
	HeaderGroup = "cdcd.group"
	// HeaderCount is set on the records of a transaction's last change only: the transaction's
	// change count, in decimal.
	HeaderCount = "cdcd.count"
)

// CommitVersion is the version of the commit stream record format this package writes.
const CommitVersion = 1

// CommitRecord is one record of the commit stream: a group of whole source transactions whose data
// records were written together, and where those records are. The last CommitRecord of a commit
// stream is cdcd's bookmark: the source resumes right after Resume.
type CommitRecord struct {
	Version int `json:"v"`
	// Source identifies what was captured, e.g. "postgres/7713937006978238479/shop/cdcd_slot" (the
	// server's system identifier, the database, the slot); one commit stream
	// belongs to one source.
	Source string `json:"source"`
	// Group numbers the records of a commit stream from 1, without gaps.
	Group uint64 `json:"group"`
	// Resume is the source position just after the group's last transaction, or later when the
	// source read past log that held nothing to write (a group may then list no transaction).
	Resume string `json:"resume"`
	// Lineage is the source's line of history Resume belongs to (PostgreSQL: the timeline), so that
	// a restart can prove the source still continues from it.
	Lineage string `json:"lineage,omitempty"`
	// Txns are the group's source transactions in commit order.
	Txns []TxnEntry `json:"txns"`
	// State is the source's state after the group (a snapshot in progress), which a restart
	// resumes with together with Resume; empty when there is none.
	State string `json:"state,omitempty"`
	// Ranges say where the group's data records are.
	Ranges []Range `json:"ranges"`
	// Written is when cdcd wrote the record.
	Written time.Time `json:"written"`
}

// TxnEntry describes one source transaction of a group.
type TxnEntry struct {
	ID       string `json:"id"`
	Position string `json:"pos"`
	End      string `json:"end"`
	// CommitMillis is the source's commit time in Unix milliseconds (0 for a snapshot).
	CommitMillis int64 `json:"ts_ms,omitempty"`
	// Changes is how many changes the transaction held; Records how many data records they became.
	Changes  int64 `json:"changes"`
	Records  int64 `json:"records"`
	Snapshot bool  `json:"snapshot,omitempty"`
	// Copy says which chunk of which table a snapshot transaction copied.
	Copy *Copy `json:"copy,omitempty"`
}

// Copy is chunk Chunk (from 1) of Table's snapshot, after which Rows rows of the table are copied in
// all; Complete marks the table's last chunk: its copy is whole.
type Copy struct {
	Table    string `json:"table"`
	Chunk    int64  `json:"chunk"`
	Rows     int64  `json:"rows"`
	Complete bool   `json:"complete,omitempty"`
}

// Range is the span of one partition that holds a group's records: Count data records between
// offsets First and Last inclusive (a span may also hold transaction markers).
type Range struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	First     int64  `json:"first"`
	Last      int64  `json:"last"`
	Count     int64  `json:"count"`
}

// Marshal encodes the record.
func (c *CommitRecord) Marshal() ([]byte, error) { return json.Marshal(c) }

// ParseCommitRecord decodes a commit stream record, refusing versions it does not know.
func ParseCommitRecord(b []byte) (*CommitRecord, error) {
	var c CommitRecord
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("bookmark: commit stream record is not valid: %w", err)
	}
	if c.Version != CommitVersion {
		return nil, fmt.Errorf("bookmark: commit stream record version %d is not supported (this build reads version %d)", c.Version, CommitVersion)
	}
	if c.Group == 0 || c.Source == "" {
		return nil, fmt.Errorf("bookmark: commit stream record lacks its group or source")
	}
	return &c, nil
}
