package kcop

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestAppendInstantIsRFC3339Nano: instants render exactly as Go's own RFC3339Nano layout renders
// them in UTC, across the years, the zones they come in and every length of fraction.
func TestAppendInstantIsRFC3339Nano(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("east", 5*3600+1800), time.FixedZone("west", -11*3600)}
	times := []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 1, 12, 0, 0, 120000000, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(0, 1, 1, 0, 30, 0, 0, zones[1]), // year 0 in UTC is one before
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		sec, ns := r.Int64N(400*365*86400)-100*365*86400, r.Int64N(1_000_000_000)
		switch r.IntN(3) {
		case 0:
			ns -= ns % 1000 // microseconds, as PostgreSQL's
		case 1:
			ns = 0
		}
		times = append(times, time.Unix(sec, ns).In(zones[r.IntN(len(zones))]))
	}
	for _, tm := range times {
		want := tm.UTC().Format(time.RFC3339Nano)
		if got := string(appendInstant([]byte("x"), tm)); got != "x"+want {
			t.Fatalf("%v renders as %q, want %q", tm, got[1:], want)
		}
	}
}

// TestISOIntervalIsPostgreSQLs: intervals render exactly as PostgreSQL renders them under
// IntervalStyle iso_8601, for the edges and many random ones of every sign.
func TestISOIntervalIsPostgreSQLs(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET IntervalStyle = 'iso_8601'"); err != nil {
		t.Fatal(err)
	}
	ivs := []change.Interval{{}, {Months: 12}, {Months: -1}, {Months: -14, Days: 3}, {Days: -1},
		{Microseconds: 1}, {Microseconds: -1}, {Microseconds: 500_000}, {Microseconds: -3_600_000_000},
		{Microseconds: 86_399_999_999}, {Months: math.MaxInt32, Days: math.MinInt32, Microseconds: math.MaxInt64},
		{Months: math.MinInt32, Days: math.MaxInt32, Microseconds: math.MinInt64 + 1}}
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		iv := change.Interval{Months: r.Int32N(400) - 200, Days: r.Int32N(80) - 40, Microseconds: r.Int64N(2*86_400_000_000*40) - 86_400_000_000*40}
		switch r.IntN(4) {
		case 0:
			iv.Microseconds -= iv.Microseconds % 1_000_000
		case 1:
			iv.Months = 0
		case 2:
			iv.Microseconds %= 1000
		}
		ivs = append(ivs, iv)
	}
	batch := &pgx.Batch{}
	for _, iv := range ivs {
		batch.Queue(fmt.Sprintf("SELECT ('%d months %d days %d microseconds'::interval)::text", iv.Months, iv.Days, iv.Microseconds))
	}
	br := conn.SendBatch(ctx, batch)
	defer br.Close()
	for _, iv := range ivs {
		var want string
		if err := br.QueryRow().Scan(&want); err != nil {
			t.Fatalf("%+v: %v", iv, err)
		}
		if got := isoInterval(iv); got != want {
			t.Errorf("%+v renders as %q; PostgreSQL renders %q", iv, got, want)
		}
	}
}
