package mysql

import (
	"fmt"
	"strconv"
	"strings"
)

// Position is a place in a server's binlog between two transactions: the GTID set executed up to
// there, in the flavour's spelling (MySQL "3e11fa47-...:1-120", MariaDB "0-1-120,1-2-7"), empty when
// GTIDs are off, and the binlog file and offset just after the transaction's last event.
//
// Its text form is "<gtid set>;<file>:<offset>", or "<file>:<offset>" without GTIDs; neither
// spelling of a GTID set contains ';'.
type Position struct {
	GTIDs  string
	File   string
	Offset uint32
}

// String is the text form, as recorded in the commit stream.
func (p Position) String() string {
	fp := p.File + ":" + strconv.FormatUint(uint64(p.Offset), 10)
	if p.GTIDs == "" {
		return fp
	}
	return p.GTIDs + ";" + fp
}

// ParsePosition reads the text form of a Position.
func ParsePosition(s string) (Position, error) {
	var p Position
	fp := s
	if i := strings.LastIndexByte(s, ';'); i >= 0 {
		p.GTIDs, fp = s[:i], s[i+1:]
		if p.GTIDs == "" {
			return Position{}, fmt.Errorf("binlog position %q: empty GTID set before ';'", s)
		}
	}
	i := strings.LastIndexByte(fp, ':')
	if i <= 0 {
		return Position{}, fmt.Errorf("binlog position %q is not [<gtid set>;]<file>:<offset>", s)
	}
	off, err := strconv.ParseUint(fp[i+1:], 10, 32)
	if err != nil {
		return Position{}, fmt.Errorf("binlog position %q: offset: %w", s, err)
	}
	p.File, p.Offset = fp[:i], uint32(off)
	return p, nil
}

// before reports whether p lies before q in one server's binlog, by file and offset.
func (p Position) before(q Position) bool {
	if p.File != q.File {
		return p.File < q.File // binlog files are numbered with fixed-width suffixes
	}
	return p.Offset < q.Offset
}
