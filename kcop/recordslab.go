package kcop

// recordSlabChunk is the size of a recordSlab's chunks (the largest of Go's small size classes);
// keyRoom is the room a key is begun in.
const (
	recordSlabChunk = 32 << 10
	keyRoom         = 64
)

// recordSlab hands out the bytes of rendered records from shared chunks: one allocation for
// dozens of records instead of one each. Rendering appends into the room begin gives; end claims
// what was written and caps the slice's capacity at its length, so that nothing appended to a
// record handed out can reach the next one, and the slab never writes a claimed byte again. A
// chunk lives as long as any record of it does. A slab belongs to one goroutine at a time.
type recordSlab struct {
	chunk []byte
}

// begin is empty room to append a record of about hint bytes to: the rest of the current chunk
// when it has that much, else a new chunk (or, for a record larger than a quarter of a chunk, an
// allocation of its own).
func (s *recordSlab) begin(hint int) []byte {
	if cap(s.chunk)-len(s.chunk) < hint {
		if hint > recordSlabChunk/4 {
			return make([]byte, 0, hint)
		}
		s.chunk = make([]byte, 0, recordSlabChunk)
	}
	return s.chunk[len(s.chunk):len(s.chunk)]
}

// end claims b, which was appended to the room the last begin gave (it may have outgrown it, into
// an allocation of its own), and returns it with its capacity cut to its length; nil stays nil.
func (s *recordSlab) end(b []byte) []byte {
	n := len(s.chunk)
	if len(b) > 0 && n < cap(s.chunk) && &b[0] == &s.chunk[:n+1][n] {
		s.chunk = s.chunk[:n+len(b)]
	}
	return b[:len(b):len(b)]
}
