package capture

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// CopyProgress keeps a source's snapshot progress for Copier, safe from any goroutine: the
// source's reader updates it, metrics and `cdcd status` read it. The zero value is empty.
type CopyProgress struct {
	mu     sync.Mutex
	tables []TableCopy
	paused bool
}

// Copying implements Copier.
func (p *CopyProgress) Copying() []TableCopy {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.tables)
	for i := range out {
		out[i].Paused = p.paused
	}
	return out
}

// Reset replaces the progress: a snapshot (re)starts with tables still to copy.
func (p *CopyProgress) Reset(tables []TableCopy, paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tables, p.paused = tables, paused
}

// Add queues tables behind those already listed.
func (p *CopyProgress) Add(tables ...TableCopy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tables = append(p.tables, tables...)
}

// Update changes the entry of table, if listed.
func (p *CopyProgress) Update(table string, f func(*TableCopy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.tables {
		if p.tables[i].Table == table {
			f(&p.tables[i])
			return
		}
	}
}

// SetPaused says whether the snapshot waits for a request to resume.
func (p *CopyProgress) SetPaused(paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = paused
}

// Cancel drops the unfinished entries of tables (all unfinished ones when tables is empty).
func (p *CopyProgress) Cancel(tables []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tables = slices.DeleteFunc(p.tables, func(c TableCopy) bool {
		return !c.Done && (len(tables) == 0 || slices.Contains(tables, c.Table))
	})
}

// ParseSignal turns a row of a Debezium-style signal table (its type and data columns) into a
// snapshot request: execute-snapshot and stop-snapshot with data {"data-collections": [...]},
// pause-snapshot, resume-snapshot.
func ParseSignal(kind, data string) (SnapshotRequest, error) {
	var payload struct {
		Tables []string `json:"data-collections"`
	}
	if data != "" {
		if err := json.Unmarshal([]byte(data), &payload); err != nil {
			return SnapshotRequest{}, fmt.Errorf("the signal's data is not JSON: %w", err)
		}
	}
	switch kind {
	case "execute-snapshot":
		return SnapshotRequest{Action: SnapshotStart, Tables: payload.Tables}, nil
	case "stop-snapshot":
		return SnapshotRequest{Action: SnapshotCancel, Tables: payload.Tables}, nil
	case "pause-snapshot":
		return SnapshotRequest{Action: SnapshotPause}, nil
	case "resume-snapshot":
		return SnapshotRequest{Action: SnapshotResume}, nil
	}
	return SnapshotRequest{}, fmt.Errorf("signal type %q is not one cdcd knows (execute-snapshot, stop-snapshot, pause-snapshot, resume-snapshot)", kind)
}
