package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestAvroReadByConfluentClient: PostgreSQL → cdcd's avro KCOP → Kafka, read back by Confluent's own
// Python client (its AvroDeserializer fetching the schemas from the registry by id), and compared
// with the rows PostgreSQL holds.
func TestAvroReadByConfluentClient(t *testing.T) {
	registry := testenv.RegistryURL(t)
	python := confluentPython(t)
	h := newHarness(t, "CREATE TABLE accounts (id int8 PRIMARY KEY, total numeric(12,2) NOT NULL, name text, paid bool, ratio float8)")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	chain := fmt.Sprintf("kcops:\n  - type: avro\n    registry_url: %s\n    topic: \"%s.{table}\"\n"+
		"  - type: avro-audit\n    registry_url: %[1]s\n    topic: \"%[2]s.audit.{table}\"\n", registry, h.id)
	if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.exec("INSERT INTO accounts VALUES (1, 10.50, 'snapshot row', true, 0.1)")
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("BEGIN; INSERT INTO accounts VALUES (2, 99999.99, 'héllo', false, 1e-300), (3, -0.01, NULL, NULL, NULL); COMMIT")
	h.exec("UPDATE accounts SET total = total + 1, name = 'changed' WHERE id = 1")
	h.exec("DELETE FROM accounts WHERE id = 3")
	h.exec("UPDATE accounts SET id = 4 WHERE id = 2")
	// A new column: a new schema version, which the Confluent client reads beside the old one.
	h.exec("ALTER TABLE accounts ADD COLUMN note text")
	h.exec("INSERT INTO accounts VALUES (5, 1.00, 'five', true, 0.5, 'noted')")
	h.waitDurable(time.Minute)
	// snapshot 1, inserts 2 and 3, update 1, delete 3 (a tombstone), key change 2→4 (a tombstone, a
	// row), insert 5 under the second version
	const records = 8

	out, err := readAvroCommand(t, python, strings.Join(h.brokers, ","), registry, h.id+".accounts", strconv.Itoa(records)).CombinedOutput()
	if err != nil {
		t.Fatalf("the Confluent client: %v\n%s", err, out)
	}
	last := map[string]map[string]any{} // the last value per key, nil after a tombstone
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var rec struct {
			Key   map[string]any `json:"key"`
			Value map[string]any `json:"value"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		last[fmt.Sprint(rec.Key["id"])] = rec.Value
	}
	rows, err := h.conn.Query(context.Background(), "SELECT id::text, total::text, name, paid, ratio::text, note FROM accounts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for rows.Next() {
		var id, total string
		var name, ratio, note *string
		var paid *bool
		if err := rows.Scan(&id, &total, &name, &paid, &ratio, &note); err != nil {
			t.Fatal(err)
		}
		held[id] = true
		v := last[id]
		if v == nil {
			t.Errorf("account %s: the Confluent client read no row for it", id)
			continue
		}
		if fmt.Sprint(v["id"]) != id || v["total"] != total {
			t.Errorf("account %s: read %v, PostgreSQL has total %s", id, v, total)
		}
		if (name == nil) != (v["name"] == nil) || name != nil && v["name"] != *name {
			t.Errorf("account %s: name %v, PostgreSQL has %v", id, v["name"], name)
		}
		if (paid == nil) != (v["paid"] == nil) || paid != nil && v["paid"] != *paid {
			t.Errorf("account %s: paid %v, PostgreSQL has %v", id, v["paid"], paid)
		}
		if (note == nil) != (v["note"] == nil) || note != nil && v["note"] != *note {
			t.Errorf("account %s: note %v, PostgreSQL has %v", id, v["note"], note)
		}
		if ratio != nil {
			want, _ := strconv.ParseFloat(*ratio, 64)
			if got, ok := v["ratio"].(float64); !ok || got != want {
				t.Errorf("account %s: ratio %v, PostgreSQL has %s", id, v["ratio"], *ratio)
			}
		}
	}
	rows.Close()
	for id, v := range last {
		if !held[id] && v != nil {
			t.Errorf("account %s is gone from PostgreSQL, but its last record is %v, not a tombstone", id, v)
		}
	}

	// The single-row audit records, one per change in source order, read by the same client.
	out, err = readAvroCommand(t, python, strings.Join(h.brokers, ","), registry, h.id+".audit.accounts", "7").CombinedOutput()
	if err != nil {
		t.Fatalf("the Confluent client on the audit topic: %v\n%s", err, out)
	}
	var trail []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var rec struct {
			Value struct {
				Op     string         `json:"AUD_OP"`
				Before map[string]any `json:"beforeImage"`
				After  map[string]any `json:"afterImage"`
			} `json:"value"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		id := func(img map[string]any) string {
			if img == nil {
				return "-"
			}
			return fmt.Sprint(img["id"])
		}
		trail = append(trail, rec.Value.Op+id(rec.Value.Before)+">"+id(rec.Value.After))
	}
	// Under REPLICA IDENTITY DEFAULT an update sends no before image unless its key changes, when it
	// sends the old key.
	if want := []string{"r->1", "c->2", "c->3", "u->1", "d3>-", "u2>4", "c->5"}; !slices.Equal(trail, want) {
		t.Errorf("the audit trail %v, want %v", trail, want)
	}

	// A column whose type changes is refused by the registry (BACKWARD): cdcd stops, naming the
	// table and the column, instead of retrying for ever.
	h.exec("ALTER TABLE accounts ALTER COLUMN paid TYPE text")
	h.exec("UPDATE accounts SET paid = 'yes' WHERE id = 5")
	if done, code := h.exited(time.Minute); !done || code == 0 {
		t.Fatalf("cdcd did not stop on a refused schema (exited %v, code %d)\n%s", done, code, h.log())
	}
	for _, want := range []string{h.id + ".accounts under", "column paid changed from boolean to string"} {
		if !strings.Contains(h.log(), want) {
			t.Errorf("cdcd's log does not say %q:\n%s", want, h.log())
		}
	}
}

// readAvroCommand runs testdata/read_avro.py, bounded so that a hung client fails the test instead
// of eating the suite's time.
func readAvroCommand(t *testing.T, python string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, python, append([]string{"testdata/read_avro.py"}, args...)...)
}

// confluentPython is the Python of the virtualenv scripts/test.sh makes with confluent-kafka.
func confluentPython(t *testing.T) string {
	t.Helper()
	python := filepath.Join(testenv.StackDir(), "python", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		if testenv.InCI() {
			t.Fatalf("%s is missing; scripts/test.sh makes it", python)
		}
		t.Skipf("%s is missing; `make test` (scripts/test.sh) makes it", python)
	}
	return python
}

// TestMariaDBAvroReadByConfluentClient: Avro records of MariaDB rows (unsigned, decimal, float and
// double, tinyint(1), blob, datetime with microseconds, NULLs) read back by Confluent's own client
// through the registry equal what MariaDB itself renders of the rows it holds.
func TestMariaDBAvroReadByConfluentClient(t *testing.T) {
	registry := testenv.RegistryURL(t)
	python := confluentPython(t)
	h := newMyHarness(t, "CREATE TABLE {t}acct (id bigint unsigned PRIMARY KEY, total decimal(12,2) NOT NULL, name varchar(40), ratio double, small float, paid tinyint(1), photo blob, at datetime(6))", "")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	chain := fmt.Sprintf("kcops:\n  - type: avro\n    registry_url: %s\n    topic: \"%s.{table}\"\n", registry, h.id)
	if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.exec(h.sql("INSERT INTO {t}acct VALUES (18446744073709551615, 10.50, 'snapshot row', 0.1, 0.1, 1, x'00ff10', '2026-01-02 03:04:05.123456')"))
	h.start()
	h.waitStreaming(time.Minute)
	h.exec(h.sql("INSERT INTO {t}acct VALUES (2, 99999.99, 'héllo', 1e-300, -3.5, 0, '', '1970-01-01 00:00:00'), (3, -0.01, NULL, NULL, NULL, NULL, NULL, NULL)"))
	h.exec(h.sql("UPDATE {t}acct SET total = total + 1, name = 'changed' WHERE id = 2"))
	h.exec(h.sql("DELETE FROM {t}acct WHERE id = 3"))
	h.exec(h.sql("UPDATE {t}acct SET id = 4 WHERE id = 2"))
	// snapshot 1, inserts 2 and 3, update 2, delete 3 (a tombstone), key change 2→4 (a tombstone, a row)
	table := h.id + "_acct"
	out, err := readAvroCommand(t, python, strings.Join(h.brokers, ","), registry, h.id+"."+table, "7").CombinedOutput()
	if err != nil {
		t.Fatalf("the Confluent client: %v\n%s", err, out)
	}
	last := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var rec struct {
			Key   map[string]any `json:"key"`
			Value map[string]any `json:"value"`
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		last[fmt.Sprint(rec.Key["id"])] = rec.Value
	}
	res, err := h.conn.Execute(h.sql(`SELECT CAST(id AS CHAR), CAST(total AS CHAR), name, CAST(ratio AS CHAR), CAST(small AS CHAR),
		CAST(paid AS CHAR), HEX(photo), DATE_FORMAT(at, '%Y-%m-%dT%H:%i:%s.%f') FROM {t}acct ORDER BY id`))
	if err != nil {
		t.Fatal(err)
	}
	if res.RowNumber() != 2 {
		t.Fatalf("MariaDB holds %d rows, want 2", res.RowNumber())
	}
	for i := range res.RowNumber() {
		col := func(j int) (string, bool) {
			v, _ := res.GetValue(i, j)
			if v == nil {
				return "", false
			}
			s, _ := res.GetString(i, j)
			return s, true
		}
		id, _ := col(0)
		v := last[id]
		if v == nil {
			t.Errorf("row %s: the Confluent client read no row for it", id)
			continue
		}
		str := func(name string, j int) {
			want, ok := col(j)
			got, isStr := v[name].(string)
			if !ok && v[name] != nil || ok && (!isStr || got != want) {
				t.Errorf("row %s: %s = %v, MariaDB has %q (null: %v)", id, name, v[name], want, !ok)
			}
		}
		str("id", 0)
		str("total", 1)
		str("name", 2)
		// Doubles and floats exactly: MariaDB's shortest text parsed at the column's precision.
		for _, f := range []struct {
			name string
			j    int
			bits int
		}{{"ratio", 3, 64}, {"small", 4, 32}} {
			want, ok := col(f.j)
			if !ok {
				if v[f.name] != nil {
					t.Errorf("row %s: %s = %v, MariaDB has NULL", id, f.name, v[f.name])
				}
				continue
			}
			w, err := strconv.ParseFloat(want, f.bits)
			n, _ := v[f.name].(json.Number)
			g, err2 := strconv.ParseFloat(string(n), 64)
			if err != nil || err2 != nil || g != w {
				t.Errorf("row %s: %s = %v, MariaDB has %s", id, f.name, v[f.name], want)
			}
		}
		if want, _ := col(5); fmt.Sprint(v["paid"]) != want {
			t.Errorf("row %s: paid = %v, MariaDB has %s", id, v["paid"], want)
		}
		if want, _ := col(6); !strings.EqualFold(fmt.Sprint(v["photo"]), want) {
			t.Errorf("row %s: photo = %v, MariaDB has %s", id, v["photo"], want)
		}
		if want, _ := col(7); v["at"] != want {
			t.Errorf("row %s: at = %v, MariaDB has %s", id, v["at"], want)
		}
	}
	if v, ok := last["3"]; !ok || v != nil {
		t.Errorf("row 3 is gone from MariaDB, but its last record is %v", v)
	}
}

// TestAvroRegistryOutages: a registry that does not answer when cdcd starts stops it at once,
// naming registry_url (and `cdcd validate` says so); one that stops answering while cdcd runs (the
// process paused in the middle of a schema change) is waited out: every row arrives once, in its
// transaction, after it answers again.
func TestAvroRegistryOutages(t *testing.T) {
	registry := testenv.RegistryURL(t)
	h := newHarness(t, "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
	cfg, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	old := fmt.Sprintf("kcops:\n  - type: json\n    topic: \"%s.{table}\"\n", h.id)
	withRegistry := func(url string) {
		chain := fmt.Sprintf("kcops:\n  - type: avro\n    registry_url: %s\n    timeout: 1s\n    topic: \"%s.{table}\"\n", url, h.id)
		if err := os.WriteFile(h.cfgPath, []byte(strings.Replace(string(cfg), old, chain, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	withRegistry("http://127.0.0.1:1/apis/ccompat/v7")
	if out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "option registry_url") {
		t.Errorf("validate with no registry: %v\n%s", err, out)
	}
	h.start()
	if done, code := h.exited(time.Minute); !done || code == 0 || !strings.Contains(h.log(), "option registry_url") {
		t.Fatalf("cdcd with no registry: exited %v, code %d\n%s", done, code, h.log())
	}

	withRegistry(registry)
	h.start()
	h.waitStreaming(time.Minute)
	ctx := context.Background()
	var xids []string
	txn := func(sql string) {
		var xid string
		tx, err := h.conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, "SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text").Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		xids = append(xids, xid)
	}
	for i := range 5 {
		txn(fmt.Sprintf("INSERT INTO items SELECT g, g FROM generate_series(%d, %d) g", i*10+1, i*10+10))
	}
	h.waitDurable(time.Minute)

	pidText, err := os.ReadFile(filepath.Join(testenv.StackDir(), "registry", "registry.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	// A new column needs a new schema version, which the paused registry cannot give.
	h.exec("ALTER TABLE items ADD COLUMN note text")
	for i := 5; i < 10; i++ {
		txn(fmt.Sprintf("INSERT INTO items SELECT g, g, 'v2' FROM generate_series(%d, %d) g", i*10+1, i*10+10))
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.log(), "retrying the change") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(h.log(), "retrying the change") {
		t.Fatalf("cdcd did not retry while the registry was paused:\n%s", h.log())
	}
	if done, _ := h.exited(2 * time.Second); done {
		t.Fatalf("cdcd stopped while the registry was paused:\n%s", h.log())
	}
	resume()
	h.waitDurable(2 * time.Minute)

	// Every transaction once, in order, with all its rows.
	var got []string
	counts := map[string]int{}
	for _, tx := range drain(t, newTCC(t, h), len(xids)) {
		if tx.Snapshot {
			continue
		}
		got = append(got, tx.ID)
		counts[tx.ID] += len(tx.Ops)
	}
	if !slices.Equal(got, xids) {
		t.Errorf("the tcc gave transactions %v, PostgreSQL committed %v", got, xids)
	}
	for _, x := range xids {
		if counts[x] != 10 {
			t.Errorf("transaction %s: %d records, want its 10 rows", x, counts[x])
		}
	}
}
