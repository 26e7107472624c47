package change

import (
	"errors"
	"sync"
	"testing"
)

// TestShapeCache: a value is derived once per key, an error is returned and not kept, and the
// cache starts over rather than growing past 1,024 entries.
func TestShapeCache(t *testing.T) {
	var c ShapeCache[*Table, int]
	derived := 0
	count := func(*Table) (int, error) { derived++; return derived, nil }
	a := &Table{Name: "a"}
	if v, _ := c.Get(a, count); v != 1 {
		t.Fatalf("first Get = %d", v)
	}
	if v, _ := c.Get(a, count); v != 1 || derived != 1 {
		t.Fatalf("second Get = %d after %d derivations", v, derived)
	}
	b := &Table{Name: "a"} // the same name, another shape
	if _, err := c.Get(b, func(*Table) (int, error) { return 0, errors.New("no") }); err == nil {
		t.Fatal("the error was not returned")
	}
	if v, _ := c.Get(b, count); v != 2 {
		t.Fatalf("after an error, Get = %d, want a fresh derivation", v)
	}
	for range 2000 {
		_, _ = c.Get(&Table{}, count)
	}
	if len(c.m) > 1025 {
		t.Fatalf("the cache holds %d shapes", len(c.m))
	}
}

// TestShapeCacheAlternatingKeys: the entry Get returned last answers only its own key, whichever
// order the keys come in, from several goroutines at once (-race).
func TestShapeCacheAlternatingKeys(t *testing.T) {
	var c ShapeCache[*Table, string]
	tables := []*Table{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	name := func(t *Table) (string, error) { return t.Name, nil }
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				tbl := tables[(i*(g+1)+i/7)%len(tables)]
				if v, _ := c.Get(tbl, name); v != tbl.Name {
					t.Errorf("Get(%s) = %s", tbl.Name, v)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkShapeCacheGet(b *testing.B) {
	var c ShapeCache[*Table, int]
	tbl := &Table{Name: "a"}
	one := func(*Table) (int, error) { return 1, nil }
	for b.Loop() {
		if v, _ := c.Get(tbl, one); v != 1 {
			b.Fatal(v)
		}
	}
}
