package postgres

import (
	"time"
	"unsafe"

	"github.com/cdcd-dev/cdcd/change"
)

// slabChunk is the size of a slab's chunks; slabLargest is the longest value a chunk takes, so that
// a long value costs its own allocation and no chunk is mostly wasted.
const (
	slabChunk   = 8 << 10
	slabLargest = 512
	// boxChunkBytes is about the size of each chunk of boxed values, rows, elements and changes;
	// slabLargestRow is the most values a row or array takes from a chunk.
	boxChunkBytes  = 4 << 10
	slabLargestRow = 64
)

// slab copies the text of decoded values into shared chunks, so that the strings of many values
// cost one allocation rather than one each; likewise the rows, array elements and the interfaces'
// values of decoded columns. A chunk is only ever appended to: what is handed out is never written
// again by the slab, and its chunk lives as long as anything of it does (the collector keeps a
// chunk for any pointer into it). A slab belongs to one goroutine; the nil slab allocates
// everything on its own.
type slab struct {
	chunk []byte

	// The boxes below hold the values of decoded columns for the interfaces a change.Value keeps
	// them in: putting a string, an int64 or a time.Time into an interface costs an allocation of
	// its own otherwise (a fifth of the decoder's time on wide rows). Rows and array elements are
	// written by the decoder after they are handed out, and by nobody once decoded.
	strs      chunk[string]
	words     chunk[uint64]
	instants  chunk[time.Time]
	intervals chunk[change.Interval]
	arrays    chunk[[]any]
	elems     chunk[any]
	values    chunk[change.Value]
	changes   chunk[change.Change]
}

// chunk hands out room for values of T from shared allocations, as the slab does for bytes.
type chunk[T any] struct {
	vals []T
	typ  unsafe.Pointer // for box: the type word of an interface holding a T
}

// carve is room for n values from c's current allocation, or a new one when it lacks the room.
func (c *chunk[T]) carve(n int) []T {
	if cap(c.vals)-len(c.vals) < n {
		var v T
		c.vals = make([]T, 0, max(n, boxChunkBytes/int(unsafe.Sizeof(v))))
	}
	start := len(c.vals)
	c.vals = c.vals[:start+n]
	return c.vals[start : start+n : start+n]
}

// put stores v in c's current allocation and returns where.
func (c *chunk[T]) put(v T) unsafe.Pointer {
	slot := c.carve(1)
	slot[0] = v
	return unsafe.Pointer(&slot[0])
}

// box returns v in an interface whose value is in c's current allocation.
func (c *chunk[T]) box(v T) any {
	if c.typ == nil {
		c.typ = typeWord(v) // once: converting v allocates
	}
	return boxAt(c.typ, c.put(v))
}

// eface is the layout of an interface without methods (as the runtime and package reflect have it).
type eface struct {
	typ, data unsafe.Pointer
}

// typeWord is the type word of an interface holding x.
func typeWord(x any) unsafe.Pointer {
	return (*eface)(unsafe.Pointer(&x)).typ
}

// boxAt is an interface of type typ whose value is the one at p. The type must not be
// pointer-shaped (a pointer, map, channel, func or a struct or array of just one of them): for
// those the interface holds the value itself, not a pointer to it. The value at p must never be
// written again.
func boxAt(typ, p unsafe.Pointer) any {
	var x any
	*(*eface)(unsafe.Pointer(&x)) = eface{typ: typ, data: p}
	return x
}

// boxString is s in an interface, its string header in the slab.
func boxString[T ~string](sl *slab, s T) any {
	if sl == nil {
		return s
	}
	// One chunk for all string types, so the type word is T's: converting an empty string
	// allocates nothing.
	return boxAt(typeWord(T("")), sl.strs.put(string(s)))
}

// boxWord is a number in an interface, its bits in the slab.
func boxWord[T int64 | float64 | float32](sl *slab, v T) any {
	if sl == nil {
		return v
	}
	slot := sl.words.put(0)
	*(*T)(slot) = v // before the value is handed out; a float32 takes the first half of the word
	// The conversion of a zero number allocates nothing.
	return boxAt(typeWord(T(0)), slot)
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

// boxInstant is t in an interface, its value in the slab.
func (s *slab) boxInstant(t time.Time) any {
	if s == nil {
		return t
	}
	return s.instants.box(t)
}

// boxInterval is iv in an interface, its value in the slab.
func (s *slab) boxInterval(iv change.Interval) any {
	if s == nil {
		return iv
	}
	return s.intervals.box(iv)
}

// boxArray is an array's elements in an interface, the slice's header in the slab.
func (s *slab) boxArray(elems []any) any {
	if s == nil {
		return elems
	}
	return s.arrays.box(elems)
}

// elements is room for n array elements, from the slab's current allocation when it has room.
func (s *slab) elements(n int) []any {
	if s == nil || n > slabLargestRow {
		return make([]any, n)
	}
	return s.elems.carve(n)
}

// row is room for a row of n values, from the slab's current allocation when it has room.
func (s *slab) row(n int) change.Row {
	if s == nil || n > slabLargestRow {
		return make(change.Row, n)
	}
	return s.values.carve(n)
}

// change is c in the slab's current allocation: one for dozens of changes. The reader may fill it
// in until it hands it on.
func (s *slab) change(c change.Change) *change.Change {
	if s == nil {
		return &c
	}
	return (*change.Change)(s.changes.put(c))
}

// view is b as a string for reading only (parsing, comparing, error messages that copy it): it
// shares b's bytes, so it must not be kept.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
