package change

import (
	"sync"
	"sync/atomic"
)

// ShapeCache keeps what was derived from a table's shape, under a key that holds the *Table (the
// *Table itself, or the *Table with more): a source hands out a new *Table when a table's columns
// change, so the pointer identifies the shape. It starts over past 1,024 entries, so that shapes
// replaced by schema changes do not stay reachable (but for the one Get returned last). It is safe
// for concurrent use; the zero value is empty and ready.
type ShapeCache[K comparable, V any] struct {
	// last is the entry Get returned last. Changes come table by table, mostly many of one table
	// in a row, and every stage asks for each change: most Gets find it here, without the lock.
	last atomic.Pointer[shapeEntry[K, V]]
	mu   sync.Mutex
	m    map[K]*shapeEntry[K, V]
}

type shapeEntry[K comparable, V any] struct {
	k K
	v V
}

// Get returns what is kept for k, deriving and keeping it first if there is nothing yet; an error
// from derive is returned and nothing is kept.
func (c *ShapeCache[K, V]) Get(k K, derive func(K) (V, error)) (V, error) {
	if e := c.last.Load(); e != nil && e.k == k {
		return e.v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		v, err := derive(k)
		if err != nil {
			return v, err
		}
		if c.m == nil || len(c.m) > 1024 {
			c.m = map[K]*shapeEntry[K, V]{}
		}
		e = &shapeEntry[K, V]{k, v}
		c.m[k] = e
	}
	c.last.Store(e)
	return e.v, nil
}
