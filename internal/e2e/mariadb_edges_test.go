package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// ddlExpectation is what one insert's change must carry: the table's columns and key as MariaDB's
// catalog described them when the row was written.
type ddlExpectation struct {
	columns []string
	key     []string
}

func (h *myHarness) columnsNow(table string) ddlExpectation {
	h.t.Helper()
	res, err := h.conn.Execute(`SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, h.m.Database, h.id+"_"+table)
	if err != nil {
		h.t.Fatal(err)
	}
	var e ddlExpectation
	for i := range res.RowNumber() {
		name, _ := res.GetString(i, 0)
		key, _ := res.GetString(i, 1)
		e.columns = append(e.columns, name)
		if key == "PRI" {
			e.key = append(e.key, name)
		}
	}
	return e
}

// TestMariaDBSchemaChanges: ADD, DROP and RENAME COLUMN, a type change and a primary-key change,
// made while cdcd runs and while it is down with a backlog behind them: every change carries the
// columns and key its table had when the change was made, because they come from the binlog's own
// table maps, not from today's catalog.
func TestMariaDBSchemaChanges(t *testing.T) {
	h := newMyHarness(t, "CREATE TABLE {t}ddl (id INT PRIMARY KEY, a VARCHAR(10), b INT)", "")
	want := map[string]ddlExpectation{}
	values := map[string]map[string]string{} // id -> column -> JSON text cdcd must give
	insert := func(id int, cols string, vals string, check map[string]string) {
		t.Helper()
		if err := h.txn(h.conn, stmt{fmt.Sprintf("INSERT INTO {t}ddl (%s) VALUES (%s)", cols, vals), fmt.Sprintf("ddl:c:%d", id)}); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprint(id)] = h.columnsNow("ddl")
		values[fmt.Sprint(id)] = check
	}
	alter := func(sql string) {
		t.Helper()
		h.exec(h.sql("ALTER TABLE {t}ddl " + sql))
	}
	h.start()
	h.waitStreaming(60 * time.Second)
	insert(1, "id, a, b", "1, 'one', 1", map[string]string{"a": `"one"`, "b": "1"})
	alter("ADD COLUMN c DATE")
	insert(2, "id, a, b, c", "2, 'two', 2, '2024-02-29'", map[string]string{"c": `"2024-02-29"`})
	alter("DROP COLUMN a")
	insert(3, "id, b, c", "3, 3, NULL", map[string]string{"b": "3", "c": "null"})
	alter("RENAME COLUMN b TO b2")
	insert(4, "id, b2", "4, 4", map[string]string{"b2": "4"})
	alter("MODIFY b2 BIGINT UNSIGNED NOT NULL")
	insert(5, "id, b2", "5, 18446744073709551615", map[string]string{"b2": "18446744073709551615"})
	alter("DROP PRIMARY KEY, ADD PRIMARY KEY (id, b2)")
	insert(6, "id, b2", "6, 6", map[string]string{"b2": "6"})

	// Down, with a backlog of changes and DDL behind it.
	h.proc.signal(syscall.SIGTERM)
	alter("ADD COLUMN d VARCHAR(5) DEFAULT 'x'")
	insert(7, "id, b2, d", "7, 7, 'seven'", map[string]string{"d": `"seven"`})
	alter("DROP COLUMN c")
	insert(8, "id, b2", "8, 8", map[string]string{"d": `"x"`})
	alter("RENAME COLUMN d TO d2, MODIFY b2 DECIMAL(21,1) NOT NULL")
	insert(9, "id, b2, d2", "9, -9, 'nine'", map[string]string{"b2": `"-9.0"`, "d2": `"nine"`})
	alter("DROP PRIMARY KEY, ADD PRIMARY KEY (d2, id)")
	insert(10, "id, b2, d2", "10, 10, 'ten'", map[string]string{"d2": `"ten"`})
	h.start()
	h.waitStreaming(60 * time.Second)

	txns, changes := h.delivered(len(h.history), 2*time.Minute)
	h.checkHistory(txns)
	for _, c := range changes {
		w := want[c.key]
		if got := slices.Sorted(maps.Keys(c.after)); !slices.Equal(got, slices.Sorted(slices.Values(w.columns))) {
			t.Errorf("row %s carries columns %v; the table had %v when it was written", c.key, got, w.columns)
		}
		var key map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.recKey), &key); err != nil {
			t.Errorf("row %s: record key %q: %v", c.key, c.recKey, err)
		} else if got := slices.Sorted(maps.Keys(key)); !slices.Equal(got, slices.Sorted(slices.Values(w.key))) {
			t.Errorf("row %s has key columns %v; the table's primary key was %v", c.key, got, w.key)
		}
		for col, v := range values[c.key] {
			if string(c.after[col]) != v {
				t.Errorf("row %s column %s is %s, want %s", c.key, col, c.after[col], v)
			}
		}
	}
}

// myExpectExit waits for cdcd to exit with code, its log mentioning each of mentions.
func (h *myHarness) expectExit(within time.Duration, code int, mentions ...string) string {
	h.t.Helper()
	exited, got := h.proc.exited(within)
	if !exited {
		h.t.Fatalf("cdcd still runs after %v; log:\n%s", within, h.proc.tail(20))
	}
	log := h.proc.log()
	if got != code {
		h.t.Errorf("cdcd exited with %d, want %d; log:\n%s", got, code, h.proc.tail(20))
	}
	for _, m := range mentions {
		if !strings.Contains(log, m) {
			h.t.Errorf("the log does not mention %q:\n%s", m, h.proc.tail(20))
		}
	}
	return log
}

// mariadbGlobal sets a server variable for the test and restores it afterwards.
func mariadbGlobal(t *testing.T, name, value string) {
	t.Helper()
	old := strings.TrimSpace(strings.Split(testenv.Stack(t, "mariadb-admin", "SELECT @@GLOBAL."+name), "\n")[1])
	if _, err := strconv.Atoi(value); err != nil {
		value = "'" + value + "'"
	}
	testenv.Stack(t, "mariadb-admin", fmt.Sprintf("SET GLOBAL %s = %s", name, value))
	if _, err := strconv.Atoi(old); err != nil {
		old = "'" + old + "'"
	}
	t.Cleanup(func() { testenv.Stack(t, "mariadb-admin", fmt.Sprintf("SET GLOBAL %s = %s", name, old)) })
}

// TestMariaDBRefusesMissingPrerequisites: each server setting capture depends on, when wrong, stops
// `cdcd run` and fails `cdcd validate`, both naming the setting and its fix.
func TestMariaDBRefusesMissingPrerequisites(t *testing.T) {
	for _, tc := range []struct{ name, value, fix string }{
		{"binlog_row_metadata", "MINIMAL", "set binlog_row_metadata=FULL"},
		{"binlog_format", "STATEMENT", "set binlog_format=ROW"},
		{"binlog_row_image", "MINIMAL", "set binlog_row_image=FULL"},
		{"gtid_strict_mode", "OFF", "set gtid_strict_mode=ON"},
		{"", "", "GRANT REPLICATION SLAVE"},
	} {
		t.Run(cmp.Or(tc.name, "replication rights"), func(t *testing.T) {
			h := newMyHarness(t, "CREATE TABLE {t}x (id INT PRIMARY KEY)", "")
			if tc.name != "" {
				mariadbGlobal(t, tc.name, tc.value)
			} else {
				// A user with SELECT only: no replication rights.
				user := h.id + "_ro"
				testenv.Stack(t, "mariadb-admin", fmt.Sprintf("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY 'ro'; GRANT SELECT ON *.* TO '%s'@'127.0.0.1'", user, user))
				t.Cleanup(func() { testenv.Stack(t, "mariadb-admin", fmt.Sprintf("DROP USER '%s'@'127.0.0.1'", user)) })
				h.env = []string{"CDCD_SOURCE_MYSQL_USER=" + user, "CDCD_SOURCE_MYSQL_PASSWORD=ro"}
			}
			h.start()
			h.expectExit(60*time.Second, 1, tc.name, tc.fix)
			out, code := runCdcd(t, h.env, "validate", "-c", h.cfgPath)
			if code != 1 || !strings.Contains(out, tc.name) || !strings.Contains(out, tc.fix) {
				t.Errorf("cdcd validate exited %d:\n%s", code, out)
			}
		})
	}
}

func runCdcd(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	p := process{t: t, logPath: t.TempDir() + "/out.log", env: env}
	p.start(cdcdBin, args...)
	exited, code := p.exited(2 * time.Minute)
	if !exited {
		p.signal(syscall.SIGKILL)
		t.Fatalf("cdcd %v did not finish", args)
	}
	return p.log(), code
}

// TestMariaDBBadInput: a wrong password and an unknown table stop cdcd at once with the setting to
// correct; a resume position whose binlogs were purged stops it naming the gap, never skipping it.
func TestMariaDBBadInput(t *testing.T) {
	t.Run("wrong password", func(t *testing.T) {
		h := newMyHarness(t, "CREATE TABLE {t}x (id INT PRIMARY KEY)", "")
		h.start("--set", "source.mysql.password=wrong")
		log := h.expectExit(60*time.Second, 1, "Access denied", "source.mysql.password")
		if strings.Contains(log, "=wrong") || strings.Contains(log, " wrong ") {
			t.Errorf("the log shows the password:\n%s", log)
		}
	})
	t.Run("unknown table", func(t *testing.T) {
		h := newMyHarness(t, "CREATE TABLE {t}x (id INT PRIMARY KEY)", "")
		h.start("--set", "source.mysql.tables=cdcd.no_such_table_"+h.id)
		h.expectExit(60*time.Second, 1, "cdcd.no_such_table_"+h.id, "does not exist")
	})
	t.Run("purged resume position", func(t *testing.T) {
		h := newMyHarness(t, "CREATE TABLE {t}x (id INT PRIMARY KEY)", "")
		h.start()
		h.waitStreaming(60 * time.Second)
		if err := h.txn(h.conn, stmt{"INSERT INTO {t}x VALUES (1)", "x:c:1"}); err != nil {
			t.Fatal(err)
		}
		h.delivered(1+1, time.Minute)
		h.proc.signal(syscall.SIGTERM)
		// Written while cdcd is down, then purged with the binlog that holds them.
		testenv.Stack(t, "mariadb-admin", "FLUSH BINARY LOGS")
		if err := h.txn(h.conn, stmt{"INSERT INTO {t}x VALUES (2)", "x:c:2"}); err != nil {
			t.Fatal(err)
		}
		// MariaDB keeps a binlog until its binlog checkpoint has passed it; purge until it is gone.
		deadline := time.Now().Add(30 * time.Second)
		for {
			testenv.Stack(t, "mariadb-admin", "FLUSH BINARY LOGS")
			out := testenv.Stack(t, "mariadb-admin", "SHOW MASTER STATUS")
			current := strings.Fields(strings.Split(out, "\n")[1])[0]
			testenv.Stack(t, "mariadb-admin", "PURGE BINARY LOGS TO '"+current+"'")
			logs := strings.Split(testenv.Stack(t, "mariadb-admin", "SHOW BINARY LOGS"), "\n")
			if len(logs) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("MariaDB keeps its old binlogs:\n%s", strings.Join(logs, "\n"))
			}
			time.Sleep(time.Second)
		}
		h.start()
		log := h.expectExit(60*time.Second, 1, "do not hold the resume position", "new kafka.commit_topic")
		t.Log(log[strings.LastIndex(log, "level=ERROR"):])
	})
}

// metric reads one unlabelled gauge from cdcd's /metrics.
func (h *myHarness) metric(name string) (float64, bool) {
	h.t.Helper()
	m := regexp.MustCompile(`serving /metrics and /healthz" addr=(\S+)`).FindStringSubmatch(h.proc.log())
	if m == nil {
		h.t.Fatal("cdcd did not log its metrics address")
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	v := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if v == nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v[1]), 64)
	return f, err == nil
}

// TestMariaDBQuietTablesDoNotHoldTheBinlog: with the captured table quiet and another table busy,
// cdcd's durable position follows the binlog past the other table's transactions (as progress in the
// commit stream), so the lag and the binlog retained for cdcd fall back to almost nothing, and a
// restart does not read that traffic again.
func TestMariaDBQuietTablesDoNotHoldTheBinlog(t *testing.T) {
	h := newMyHarness(t, "CREATE TABLE {t}quiet (id INT PRIMARY KEY)", "")
	h.exec(h.sql("CREATE TABLE {t}busy (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))"))
	t.Cleanup(func() { _, _ = h.conn.Execute(h.sql("DROP TABLE IF EXISTS {t}busy")) })
	h.start()
	h.waitStreaming(60 * time.Second)
	// While the other table is busy, cdcd's durable position trails the binlog by up to a second.
	var maxLag, maxRetained float64
	for range 200 {
		h.exec(h.sql("INSERT INTO {t}busy (v) SELECT MD5(seq) FROM seq_1_to_50"))
		lag, _ := h.metric("cdcd_source_lag_bytes")
		retained, _ := h.metric("cdcd_source_log_retained_bytes")
		maxLag, maxRetained = max(maxLag, lag), max(maxRetained, retained)
		time.Sleep(30 * time.Millisecond)
	}
	if maxLag == 0 || maxRetained == 0 {
		t.Errorf("under another table's load the metrics never moved: lag at most %v bytes, retained at most %v bytes", maxLag, maxRetained)
	}
	time.Sleep(6 * time.Second) // a probe of the retained binlog after the load
	deadline := time.Now().Add(45 * time.Second)
	var lag, retained float64
	for {
		lag, _ = h.metric("cdcd_source_lag_bytes")
		var ok bool
		retained, ok = h.metric("cdcd_source_log_retained_bytes")
		if ok && lag == 0 && retained < 16<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 200 transactions of another table: lag %v bytes, %v bytes retained for cdcd", lag, retained)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("under load: lag up to %v bytes, up to %v bytes retained; after it: lag %v bytes, %v bytes of binlog retained for cdcd", maxLag, maxRetained, lag, retained)
	h.proc.signal(syscall.SIGTERM)
	if err := h.txn(h.conn, stmt{"INSERT INTO {t}quiet VALUES (1)", "quiet:c:1"}); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(60 * time.Second)
	txns, _ := h.delivered(1+1, time.Minute)
	h.checkHistory(txns)
	resumed := regexp.MustCompile(`resuming after the commit stream's last record" group=\d+ resume=(\S+)`).FindStringSubmatch(h.proc.log())
	if resumed == nil {
		t.Fatal("cdcd did not say where it resumed")
	}
	// The busy table's 200 transactions were passed over before the stop: cdcd resumes after them.
	var busyLast string
	res, err := h.conn.Execute("SELECT @@gtid_binlog_pos")
	if err != nil {
		t.Fatal(err)
	}
	busyLast, _ = res.GetString(0, 0)
	if last := h.history[len(h.history)-1].gtid; !strings.HasPrefix(resumed[1], previousGTID(t, last)+";") {
		t.Errorf("cdcd resumed at %s, not right before the quiet table's transaction %s (server now at %s)", resumed[1], last, busyLast)
	}
}

// previousGTID is the MariaDB GTID before gtid in its domain: 0-1-41 for 0-1-42.
func previousGTID(t *testing.T, gtid string) string {
	t.Helper()
	i := strings.LastIndexByte(gtid, '-')
	seq, err := strconv.ParseUint(gtid[i+1:], 10, 64)
	if err != nil {
		t.Fatalf("GTID %q: %v", gtid, err)
	}
	return gtid[:i+1] + strconv.FormatUint(seq-1, 10)
}

// TestMariaDBNonTransactionalTablesAndServerIdentity: a MyISAM table's changes (ended by a COMMIT
// statement, not an XID) arrive like any other; and a commit stream written from one server is not
// continued against a server of another identity (here the same MariaDB with another server_id).
func TestMariaDBNonTransactionalTablesAndServerIdentity(t *testing.T) {
	h := newMyHarness(t, "CREATE TABLE {t}kv (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; CREATE TABLE {t}log (id INT PRIMARY KEY, msg VARCHAR(20)) ENGINE=MyISAM", "")
	h.start()
	h.waitStreaming(60 * time.Second)
	for i := 1; i <= 3; i++ {
		if err := h.txn(h.conn, stmt{fmt.Sprintf("INSERT INTO {t}log VALUES (%d, 'line')", i), fmt.Sprintf("log:c:%d", i)}); err != nil {
			t.Fatal(err)
		}
		if err := h.txn(h.conn, stmt{fmt.Sprintf("INSERT INTO {t}kv VALUES (%d, %d)", i, i), fmt.Sprintf("kv:c:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.txn(h.conn, stmt{"UPDATE {t}log SET msg = 'changed' WHERE id = 2", "log:u:2"}); err != nil {
		t.Fatal(err)
	}
	txns, _ := h.delivered(len(h.history)+1, time.Minute)
	h.checkHistory(txns)
	h.proc.signal(syscall.SIGTERM)

	mariadbGlobal(t, "server_id", "77")
	h.start()
	h.expectExit(60*time.Second, 1, "belongs to source", "mariadb/server-1/", "mariadb/server-77/")
}
