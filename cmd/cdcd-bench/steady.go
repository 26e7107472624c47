package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchSteady measures how long after their commit in PostgreSQL rows become visible to a
// read_committed consumer, while a writer commits rate rows per second (in transactions of a
// hundredth of a second's rows) for the given time. The commit time is PostgreSQL's, as the JSON
// envelope carries it (source.ts_ms, milliseconds); the consumer's clock is the same machine's.
func benchSteady(rate int, duration time.Duration, bin, dsn, brokers string, pc pgConfig) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	check(err)
	defer conn.Close(ctx)
	resetBench(ctx, conn, brokers, false)
	pc.snapshot = "    snapshot: never\n"
	cmd := exec.Command(bin, "run", "-c", writeConfig(dsn, brokers, pc))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Start())
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	for {
		var active bool
		err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_cdcd'").Scan(&active)
		if err == nil && active {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics("bench.rows"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(10*time.Millisecond), kgo.AllowAutoTopicCreation())
	check(err)
	defer cl.Close()

	perTxn := max(rate/100, 1)
	total := int(float64(rate) * duration.Seconds())
	go func() {
		tick := time.NewTicker(time.Second * time.Duration(perTxn) / time.Duration(rate))
		defer tick.Stop()
		for next := 1; next <= total; next += perTxn {
			<-tick.C
			_, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO bench.rows %s FROM generate_series(%d, %d) g`, rowValues(false), next, next+perTxn-1))
			check(err)
		}
	}()
	warm := total / 10 // the first tenth is left out: connections and topics being set up
	var lat []time.Duration
	seen := 0
	deadline := time.Now().Add(duration + time.Minute)
	for seen < total && time.Now().Before(deadline) {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := cl.PollFetches(pctx)
		cancel()
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			seen++
			if seen <= warm {
				return
			}
			var env struct {
				Source struct {
					TsMs int64 `json:"ts_ms"`
				} `json:"source"`
			}
			if json.Unmarshal(r.Value, &env) == nil && env.Source.TsMs > 0 {
				lat = append(lat, now.Sub(time.UnixMilli(env.Source.TsMs)))
			}
		})
	}
	if seen < total {
		log.Fatalf("only %d of %d rows became visible", seen, total)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
	}
	fmt.Printf("| steady %d rows/s for %v (%d-row transactions, %s) | commit → visible: p50 %v, p99 %v, max %v (%d rows) |\n",
		rate, duration, perTxn, pc.delivery, pct(0.5), pct(0.99), lat[len(lat)-1].Round(time.Millisecond), len(lat))
}

// resetBench drops what an earlier run left (slots, publication, schema, topics) and creates the
// empty bench.rows table and its publication.
func resetBench(ctx context.Context, conn *pgx.Conn, brokers string, wide bool) {
	table := "CREATE TABLE bench.rows (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, at timestamptz NOT NULL)"
	if wide {
		table = `CREATE TABLE bench.rows (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, at timestamptz NOT NULL,
			i2 smallint, i4 int, i8 bigint, f8 double precision, f4 real, n numeric(20,6), b boolean, d date, ts timestamp,
			tstz timestamptz, iv interval, u uuid, j jsonb, tags text[], vals int[], name varchar(40))`
	}
	for _, s := range []string{
		"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('bench_cdcd', 'bench_raw')",
		"DROP PUBLICATION IF EXISTS bench_pub",
		"DROP SCHEMA IF EXISTS bench CASCADE",
		"CREATE SCHEMA bench",
		table,
		"CREATE PUBLICATION bench_pub FOR TABLE bench.rows",
	} {
		_, err := conn.Exec(ctx, s)
		check(err)
	}
	deleteTopics(brokers)
}

// rowValues is the SELECT list (over generate_series as g) that fills bench.rows of either shape.
func rowValues(wide bool) string {
	narrow := "SELECT g, md5(g::text) || md5((g+1)::text), (g % 100000) / 100.0, now()"
	if !wide {
		return narrow
	}
	return narrow + `, (g % 32000)::smallint, (g * 7)::int, g::bigint * 1000003, g * 1.5e-3, (g / 3.0)::real, (g * 12345.678901)::numeric(20,6),
		g % 2 = 0, date '2020-01-01' + g % 3650, timestamp '2020-01-01' + g * interval '1.5 second', now() - g * interval '1 ms',
		make_interval(secs => g % 86400), md5(g::text)::uuid, jsonb_build_object('id', g, 'tag', 'x' || g % 10),
		ARRAY['a' || g % 10, 'b'], ARRAY[g % 100, g % 7, 3]::int[], 'name ' || g`
}
