package postgres

import (
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

// TestBoxedValuesOutliveTheSlab: values boxed into a slab's chunks are ordinary interfaces (same
// dynamic type, equal to the value boxed the usual way, usable as map keys), and they, the rows
// and the changes taken from the slab stay intact after
// the slab is gone, collections have run and the freed memory has been handed out again. Chunks
// that the collector did not scan, or freed while a value in them was still held, would show here
// as changed strings or numbers.
func TestBoxedValuesOutliveTheSlab(t *testing.T) {
	const perKind = 3000 // several chunks of every kind
	var got, want []any
	func() {
		sl := &slab{}
		for i := range perKind {
			s := strconv.Itoa(i*7919) + "-value"
			in := time.Date(2020, 1, 1, 0, 0, i, i*1000, time.UTC)
			iv := change.Interval{Months: int32(i), Days: int32(-i), Microseconds: int64(i) << 40}
			f64 := float64(i) / 3
			if i%100 == 1 {
				f64 = math.Copysign(0, -1)
			}
			for _, pair := range [][2]any{
				{boxString(sl, sl.string([]byte(s))), s},
				{boxString(sl, change.Decimal(sl.string([]byte(s)))), change.Decimal(s)},
				{boxString(sl, change.JSON(s)), change.JSON(s)},
				{boxString(sl, change.Date(s)), change.Date(s)},
				{boxString(sl, change.Time(s)), change.Time(s)},
				{boxString(sl, change.TimeTZ(s)), change.TimeTZ(s)},
				{boxString(sl, change.Timestamp(s)), change.Timestamp(s)},
				{boxString(sl, change.Text(s)), change.Text(s)},
				{boxWord(sl, int64(i)<<33-5), int64(i)<<33 - 5},
				{boxWord(sl, f64), f64},
				{boxWord(sl, float32(i)+0.25), float32(i) + 0.25},
				{sl.boxInstant(in), in},
				{sl.boxInterval(iv), iv},
			} {
				got, want = append(got, pair[0]), append(want, pair[1])
			}
			elems := sl.elements(3)
			elems[0], elems[1] = boxString(sl, sl.string([]byte(s))), boxWord(sl, int64(i))
			got, want = append(got, sl.boxArray(elems)), append(want, []any{s, int64(i), nil})
			row := sl.row(2)
			row[0] = change.Value{V: boxString(sl, change.Decimal(s))}
			row[1] = change.Value{Kind: change.Null}
			got, want = append(got, row), append(want, change.Row{{V: change.Decimal(s)}, {Kind: change.Null}})
			c := sl.change(change.Change{Op: change.Update, Before: row, KeyChanged: i%2 == 0})
			c.Index = int64(i) // the reader fills in the rest until it hands the change on
			got, want = append(got, c), append(want, &change.Change{Op: change.Update, KeyChanged: i%2 == 0, Index: int64(i),
				Before: change.Row{{V: change.Decimal(s)}, {Kind: change.Null}}})
		}
	}()
	// The slab is garbage now; what the values need must survive on their references alone.
	for range 3 {
		runtime.GC()
		junk := make([][]byte, 0, 1<<12)
		for j := range cap(junk) {
			junk = append(junk, []byte(fmt.Sprintf("overwrite %08d overwrite", j)))
		}
		_ = junk
	}
	keys := map[any]bool{}
	for i := range got {
		if fmt.Sprintf("%T", got[i]) != fmt.Sprintf("%T", want[i]) {
			t.Fatalf("value %d is a %T, want a %T", i, got[i], want[i])
		}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("value %d is %#v, want %#v", i, got[i], want[i])
		}
		if typ := reflect.TypeOf(got[i]); typ.Comparable() && typ.Kind() != reflect.Pointer {
			if got[i] != want[i] && got[i] == got[i] { // NaN aside, which is not boxed here
				t.Fatalf("value %d: %#v != %#v", i, got[i], want[i])
			}
			keys[got[i]] = true
			if !keys[want[i]] {
				t.Fatalf("value %d (%#v) is not found as a map key by its ordinary form", i, got[i])
			}
		}
	}
}

// TestBoxingOnTheNilSlab: the nil slab (decoding outside the stream) boxes as Go does.
func TestBoxingOnTheNilSlab(t *testing.T) {
	var sl *slab
	for _, c := range []struct{ got, want any }{
		{boxString(sl, change.Decimal("1.50")), change.Decimal("1.50")},
		{boxWord(sl, int64(-7)), int64(-7)},
		{boxWord(sl, float32(1.5)), float32(1.5)},
		{sl.boxInstant(time.Unix(5, 0).UTC()), time.Unix(5, 0).UTC()},
		{sl.boxInterval(change.Interval{Days: 2}), change.Interval{Days: 2}},
		{sl.boxArray([]any{int64(1)}), []any{int64(1)}},
		{len(sl.row(3)), 3},
		{len(sl.elements(4)), 4},
		{sl.change(change.Change{Index: 3}), &change.Change{Index: 3}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%#v, want %#v", c.got, c.want)
		}
	}
}
