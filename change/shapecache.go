package change

import "sync"

// ShapeCache keeps what was derived from a table's shape, under a key that holds the *Table (the
// *Table itself, or the *Table with more): a source hands out a new *Table when a table's columns
// change, so the pointer identifies the shape. It starts over past 1,024 entries, so that shapes
// replaced by schema changes do not stay reachable. It is safe for concurrent use; the zero value
// is empty and ready.
type ShapeCache[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

// Get returns what is kept for k, deriving and keeping it first if there is nothing yet; an error
// from derive is returned and nothing is kept.
func (c *ShapeCache[K, V]) Get(k K, derive func(K) (V, error)) (V, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[k]; ok {
		return v, nil
	}
	v, err := derive(k)
	if err != nil {
		return v, err
	}
	if c.m == nil || len(c.m) > 1024 {
		c.m = map[K]V{}
	}
	c.m[k] = v
	return v, nil
}
