package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// bigText is incompressible enough to be stored out of line (TOASTed).
func bigText(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const mixedDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (id int PRIMARY KEY, name text, qty int, price numeric(12,4), big text, updated timestamptz);
CREATE TABLE full_items (id int PRIMARY KEY, body text, note text);
ALTER TABLE full_items REPLICA IDENTITY FULL;
CREATE TABLE other (id int PRIMARY KEY, v text);
CREATE TABLE typed (id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric, f4 real, f8 double precision,
	t text, vc varchar(10), b boolean, by bytea, d date, tm time, ts timestamp, tstz timestamptz,
	iv interval, u uuid, j json, jb jsonb, ai int[], at text[], an numeric[], aa int[][], m mood, ch char(3));
`

// TestEndToEndMixedWorkload: snapshot, inserts, updates (with unchanged TOAST values, under DEFAULT
// and FULL identity), primary-key changes, deletes, multi-table transactions, TRUNCATE, ALTER TABLE
// mid-stream, every supported type with NULLs and edge values, a rolled-back transaction: what a
// read_committed consumer reads equals the source's committed changes exactly, with values streamed
// in binary form (the default where cdcd reads every column type from it) and as text. The binary run
// writes its batches compressed with cdcd's default codec (lz4), the text run with zstd.
func TestEndToEndMixedWorkload(t *testing.T) {
	for _, mode := range []struct {
		binary, log, compression string // compression "": kafka.compression unset
		codec                    uint8  // Kafka's number for the codec the batches must carry
	}{
		{"auto", "streaming values in binary form", "", 3},
		{"off", "", "zstd", 4},
	} {
		t.Run(mode.binary, func(t *testing.T) {
			args := []string{"--set", "source.postgres.binary=" + mode.binary}
			if mode.compression != "" {
				args = append(args, "--set", "kafka.compression="+mode.compression)
			}
			h := newHarness(t, mixedDDL, args...)
			mixedWorkload(t, h)
			if len(h.codecs) != 1 || h.codecs[mode.codec] == 0 {
				t.Errorf("data records by the codec of their batch %v, want all in codec %d", h.codecs, mode.codec)
			}
			if mode.log != "" && !strings.Contains(h.log(), mode.log) {
				t.Errorf("cdcd did not log %q", mode.log)
			}
			if mode.binary == "off" && strings.Contains(h.log(), "binary form") {
				t.Errorf("cdcd streamed binary values with source.postgres.binary off")
			}
			if mode.binary == "auto" && !strings.Contains(h.log(), "rendered by the server") {
				t.Errorf("cdcd did not say that the inet column is rendered by the server")
			}
		})
	}
}

func mixedWorkload(t *testing.T, h *harness) {
	w := newRecorder(h)

	// Rows present before cdcd starts arrive as the snapshot.
	h.exec("INSERT INTO items VALUES (1000, 'pre', 1, 1.5, NULL, '2026-01-01T00:00:00Z'), (1001, 'pre2', 2, 2.25, $1, NULL)", bigText(40000))
	h.exec("INSERT INTO other VALUES (1000, 'pre')")
	for _, tb := range []string{"full_items", "items", "other", "typed"} {
		w.snapshot(tb)
	}
	h.watchCommits()
	h.start()
	h.waitStreaming(time.Minute)

	big := bigText(200000)
	w.begin()
	for i := 1; i <= 5; i++ {
		w.insert("items", "id, name, qty, price, big, updated", i, fmt.Sprintf("item %d", i), i*10, fmt.Sprintf("%d.%04d", i, i), big, time.Date(2026, 3, i, 12, 0, 0, 123456000, time.UTC))
	}
	w.commit()

	w.begin()
	w.insert("typed", "id, i2, i8, n, f4, f8, t, vc, b, by, d, tm, ts, tstz, iv, u, j, jb, ai, at, an, aa, m, ch",
		1, -32768, int64(9223372036854775807), "-123456789012345678901234567890.000000000000000000001", float32(0.1), 0.30000000000000004,
		"héllo \"wörld\"\n\ttab", "ten chars!", true, []byte{0, 1, 0xfe, 0xff}, "2026-02-28", "23:59:59.999999",
		"2026-01-02 03:04:05.5", "2026-01-02 03:04:05.123456+02", "1 year 2 mons 3 days 04:05:06.5",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `{"a": [1, 2.50, "x"], "b": null}`, `{"k": {"n": 1.0}}`,
		"{1,NULL,3}", `{"a b","c\"d",NULL}`, "{1.50,-2}", "{{1,2},{3,4}}", "happy", "ab")
	w.insert("typed", "id", 2)
	w.insert("typed", "id, n, f4, f8, ts, tstz, d, iv, ai, at, jb, t",
		3, "NaN", "Infinity", "-Infinity", "infinity", "-infinity", "infinity", "-00:00:01", "{}", "{}", `[]`, "")
	w.commit()

	// One transaction over three tables; the update leaves the TOASTed column untouched.
	w.begin()
	w.update("items", 1, "qty = qty + 1", []string{"big"})
	w.insert("other", "id, v", 1, "one")
	w.delete("items", 5)
	w.commit()

	// A primary-key change: the old tuple carries the key only, so the unchanged TOAST value of the
	// new row cannot be filled in.
	w.begin()
	w.update("items", 2, "id = 100", []string{"big"})
	w.commit()

	// REPLICA IDENTITY FULL: the unchanged TOAST value is filled in from the old row.
	w.begin()
	w.insert("full_items", "id, body, note", 1, bigText(100000), "n1")
	w.commit()
	w.begin()
	w.update("full_items", 1, "note = 'n2'", nil)
	w.commit()
	w.begin()
	w.delete("full_items", 1)
	w.commit()

	// ALTER TABLE mid-stream: a new column, then a dropped one.
	h.exec("ALTER TABLE items ADD COLUMN extra text DEFAULT 'x'")
	w.begin()
	w.insert("items", "id, name, big, extra", 6, "six", "small", "y")
	w.update("items", 3, "extra = 'z'", []string{"big"})
	w.commit()
	h.exec("ALTER TABLE items DROP COLUMN qty")
	w.begin()
	w.update("items", 4, "name = 'four', big = 'now small'", nil)
	w.commit()
	// A column of a type cdcd does not read from binary pgoutput (inet, int4range): in binary mode
	// the server renders its values.
	h.exec("ALTER TABLE other ADD COLUMN addr inet, ADD COLUMN span int4range")
	w.begin()
	w.insert("other", "id, v, addr, span", 7, "seven", "192.168.0.1/24", "[3,9)")
	w.commit()

	// TRUNCATE, then more rows.
	w.begin()
	w.truncate("other")
	w.commit()
	w.begin()
	w.insert("other", "id, v", 2, "two")
	w.commit()

	// A rolled-back transaction leaves no trace.
	w.begin()
	w.insert("other", "id, v", 99, "never")
	w.rollback()

	// Many small transactions.
	for i := 10; i < 60; i++ {
		w.begin()
		w.insert("other", "id, v", i, fmt.Sprint("v", i))
		if i%3 == 0 {
			w.update("other", i, "v = v || '!'", nil)
		}
		if i%5 == 0 {
			w.delete("other", i)
		}
		w.commit()
	}

	h.waitDurable(2 * time.Minute)
	h.checkMetrics()
	h.stop()
	h.verify(w.events, h.readAll())
	// The transactions' ids and commit positions are PostgreSQL's own.
	h.checkTCCHistory(w)
	if strings.Contains(h.log(), "level=ERROR") {
		t.Errorf("cdcd logged errors:\n%s", h.log())
	}
}

// TestQuietPublicationDoesNotPinWAL: with the captured table quiet and another table busy, the
// heartbeat lets the slot follow the server's WAL, so the server can recycle it.
func TestQuietPublicationDoesNotPinWAL(t *testing.T) {
	h := newHarness(t, "CREATE TABLE quiet (id int PRIMARY KEY)")
	h.exec("CREATE TABLE public." + h.id + "_busy (id serial PRIMARY KEY, v text)")
	t.Cleanup(func() { h.exec("DROP TABLE IF EXISTS public." + h.id + "_busy") })
	h.start()
	h.waitStreaming(time.Minute)
	var before string
	if err := h.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&before); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		h.exec("INSERT INTO public." + h.id + "_busy (v) SELECT md5(g::text) FROM generate_series(1, 2000) g")
		time.Sleep(50 * time.Millisecond)
	}
	h.waitDurable(30 * time.Second) // the slot reaches the server's current position
	var retained int64
	if err := h.conn.QueryRow(context.Background(), "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&retained); err != nil {
		t.Fatal(err)
	}
	t.Logf("confirmed moved from %s; %d bytes behind the server now", before, retained)
	h.stop()
	if got := h.readAll(); len(got) != 0 {
		t.Errorf("records arrived for a table nobody changed: %v", got)
	}
}

// checkMetrics reads cdcd's /healthz and /metrics while it streams.
func (h *harness) checkMetrics() {
	h.t.Helper()
	m := regexp.MustCompile(`serving /metrics and /healthz" addr=(\S+)`).FindStringSubmatch(h.log())
	if m == nil {
		h.t.Fatalf("cdcd did not log its metrics address")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + m[1] + path)
		if err != nil {
			h.t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		h.t.Errorf("/healthz = %d %s while streaming", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`cdcd_changes_total{op="c",table="` + h.schema + `.items"}`, `cdcd_changes_total{op="t",table="` + h.schema + `.other"}`,
		"cdcd_transactions_total", "cdcd_kafka_commits_total", "cdcd_kafka_commit_seconds_bucket",
		"cdcd_source_lag_bytes", "cdcd_source_lag_seconds", "cdcd_source_log_retained_bytes", "cdcd_record_bytes_total",
	} {
		if !strings.Contains(body, want) {
			h.t.Errorf("/metrics lacks %s", want)
		}
	}
}
