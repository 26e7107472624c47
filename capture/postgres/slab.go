package postgres

import "unsafe"

// slabChunk is the size of a slab's chunks; slabLargest is the longest value a chunk takes, so that
// a long value costs its own allocation and no chunk is mostly wasted.
const (
	slabChunk   = 8 << 10
	slabLargest = 512
)

// slab copies the text of decoded values into shared chunks, so that the strings of many values
// cost one allocation rather than one each. A chunk is only ever appended to: a string handed out
// is never written again, and its chunk lives as long as any string of it does. A slab belongs to
// one goroutine; the nil slab allocates every string on its own.
type slab struct {
	chunk []byte
}

// string returns b's bytes as a string that b's later reuse cannot change.
func (s *slab) string(b []byte) string {
	if s == nil || len(b) > slabLargest {
		return string(b)
	}
	if len(b) == 0 {
		return ""
	}
	if cap(s.chunk)-len(s.chunk) < len(b) {
		s.chunk = make([]byte, 0, slabChunk)
	}
	start := len(s.chunk)
	s.chunk = append(s.chunk, b...)
	return unsafe.String(&s.chunk[start], len(b))
}

// view is b as a string for reading only (parsing, comparing, error messages that copy it): it
// shares b's bytes, so it must not be kept.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
