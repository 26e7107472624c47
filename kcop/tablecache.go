package kcop

import (
	"sync"

	"github.com/cdcd-dev/cdcd/change"
)

// tableCache keeps what a KCOP derived from a table's shape: a source hands out a new *change.Table
// when a table's columns change, so the pointer identifies the shape.
type tableCache[T any] struct {
	mu sync.Mutex
	m  map[*change.Table]T
}

func (tc *tableCache[T]) get(t *change.Table, derive func(*change.Table) (T, error)) (T, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if v, ok := tc.m[t]; ok {
		return v, nil
	}
	v, err := derive(t)
	if err != nil {
		return v, err
	}
	if tc.m == nil || len(tc.m) > 1024 {
		tc.m = map[*change.Table]T{} // shapes replaced by schema changes
	}
	tc.m[t] = v
	return v, nil
}
