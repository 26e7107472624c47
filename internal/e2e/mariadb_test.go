package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// oracleKind says how MariaDB renders a column for the comparison, and how cdcd's JSON value is
// read to compare with it. Nothing passes through float64 but doubles, compared as the exact values
// MariaDB prints in shortest round-trip form.
type oracleKind int

const (
	okText      oracleKind = iota // the text, as the JSON string
	okNumber                      // CAST AS CHAR against the JSON number (or decimal string), as text
	okBit                         // CAST AS UNSIGNED against the JSON number, as text
	okFloat32                     // the float widened to a double by MariaDB, against the JSON number, both as float32
	okFloat64                     // the double's shortest text, against the JSON number, both parsed exactly
	okHex                         // HEX() against the JSON base64
	okDatetime                    // CAST AS CHAR against the JSON string with T for the space
	okTimestamp                   // CAST AS CHAR in UTC against the JSON RFC 3339 instant
	okYear                        // CAST AS CHAR against the JSON number, as integers
)

type valueColumn struct {
	name, sqlType string
	kind          oracleKind
}

var valueColumns = []valueColumn{
	{"ti", "TINYINT", okNumber}, {"tiu", "TINYINT UNSIGNED", okNumber},
	{"si", "SMALLINT", okNumber}, {"siu", "SMALLINT UNSIGNED", okNumber},
	{"mi", "MEDIUMINT", okNumber}, {"miu", "MEDIUMINT UNSIGNED", okNumber},
	{"i", "INT", okNumber}, {"iu", "INT UNSIGNED", okNumber},
	{"bi", "BIGINT", okNumber}, {"biu", "BIGINT UNSIGNED", okNumber},
	{"d", "DECIMAL(30,4)", okNumber}, {"d65", "DECIMAL(65,0)", okNumber}, {"dfrac", "DECIMAL(10,10)", okNumber},
	{"f", "FLOAT", okFloat32}, {"db", "DOUBLE", okFloat64},
	{"c", "CHAR(5)", okText}, {"vc", "VARCHAR(100)", okText}, {"tx", "TEXT", okText},
	{"lat", "VARCHAR(20) CHARACTER SET latin1", okText},
	{"bn", "BINARY(4)", okHex}, {"vb", "VARBINARY(10)", okHex}, {"bl", "BLOB", okHex},
	{"dt", "DATE", okText}, {"dtm", "DATETIME(6)", okDatetime}, {"dtm0", "DATETIME", okDatetime},
	{"ts", "TIMESTAMP(3) NULL DEFAULT NULL", okTimestamp}, {"tm", "TIME(3)", okText}, {"tm0", "TIME", okText},
	{"yr", "YEAR", okYear},
	{"e", "ENUM('small','medium','large')", okText}, {"st", "SET('a','b','c','d')", okText},
	{"b1", "BIT(1)", okBit}, {"b64", "BIT(64)", okBit},
	{"j", "JSON", okText},
}

// valueRows are the rows of the value suite by id, as SQL literals in valueColumns order (NULL where
// a row leaves a column out).
var valueRows = map[int][]string{
	1: {"127", "255", "32767", "65535", "8388607", "16777215", "2147483647", "4294967295", "9223372036854775807", "18446744073709551615",
		"99999999999999999999999999.9999", strings.Repeat("9", 65), "0.9999999999",
		"3.4028235e38", "1.7976931348623157e308",
		"'abc'", "'héllo wörld 😀'", "REPEAT('long text ', 2000)", "'café €Ÿ'",
		"x'6100'", "x'000102'", "x'ff00fe'",
		"'9999-12-31'", "'9999-12-31 23:59:59.999999'", "'9999-12-31 23:59:59'", "'2038-01-19 03:14:07.999'", "'838:59:59.999'", "'-838:59:59'",
		"2155", "'large'", "'a,d'", "b'1'", "b'1111111111111111111111111111111111111111111111111111111111111111'",
		`'{"k": [1, 2.50, "x"], "n": null, "u": "\\u00e9"}'`},
	2: {"-128", "0", "-32768", "0", "-8388608", "0", "-2147483648", "0", "-9223372036854775808", "0",
		"-99999999999999999999999999.9999", "-" + strings.Repeat("9", 65), "-0.9999999999",
		"1.2345678", "0.30000000000000004",
		"''", "''", "''", "''",
		"x''", "x''", "x''",
		"'1000-01-01'", "'1000-01-01 00:00:00.000001'", "'1000-01-01 00:00:00'", "'1970-01-01 00:00:01.000'", "'-00:00:00.001'", "'00:00:00'",
		"1901", "'small'", "''", "b'0'", "b'0'",
		"'null'"},
	3: nil, // every column NULL
	4: {"0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "-0.1", "-1e-300",
		"'a  '", "'  b  '", "'x'", "'Ÿ'",
		"x'00000000'", "x'00'", "x'00'",
		"'0000-00-00'", "'0000-00-00 00:00:00.000000'", "'0000-00-00 00:00:00'", "'0000-00-00 00:00:00'", "'10:00:00.000'", "'-00:00:01'",
		"0", "'medium'", "'a,b,c,d'", "b'1'", "b'1000000000000000000000000000000000000000000000000000000000000000'",
		"'[]'"},
}

func (h *myHarness) insertValueRow(conn *client.Conn, id int) {
	h.t.Helper()
	names := []string{"id"}
	vals := []string{strconv.Itoa(id)}
	for i, c := range valueColumns {
		names = append(names, c.name)
		if lit := valueRows[id]; lit != nil {
			vals = append(vals, lit[i])
		} else {
			vals = append(vals, "NULL")
		}
	}
	if err := h.txn(conn, stmt{fmt.Sprintf("INSERT INTO {t}vals (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", ")), fmt.Sprintf("vals:c:%d", id)}); err != nil {
		h.t.Fatal(err)
	}
}

// oracleRows reads the table's rows as MariaDB renders them for comparison: by id, by column, nil
// for NULL.
func (h *myHarness) oracleRows() map[string]map[string]*string {
	h.t.Helper()
	exprs := []string{"CAST(id AS CHAR)"}
	for _, c := range valueColumns {
		switch c.kind {
		case okBit:
			exprs = append(exprs, "CAST(CAST("+c.name+" AS UNSIGNED) AS CHAR)")
		case okFloat32:
			exprs = append(exprs, "CAST(CAST("+c.name+" AS DOUBLE) AS CHAR)")
		case okHex:
			exprs = append(exprs, "HEX("+c.name+")")
		case okText:
			exprs = append(exprs, "CONVERT("+c.name+" USING utf8mb4)")
		default:
			exprs = append(exprs, "CAST("+c.name+" AS CHAR)")
		}
	}
	res, err := h.conn.Execute(h.sql("SELECT " + strings.Join(exprs, ", ") + " FROM {t}vals"))
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]map[string]*string{}
	for i := range res.RowNumber() {
		id, _ := res.GetString(i, 0)
		row := map[string]*string{}
		for j, c := range valueColumns {
			if isNull, _ := res.IsNull(i, j+1); isNull {
				row[c.name] = nil
				continue
			}
			s, _ := res.GetString(i, j+1)
			row[c.name] = &s
		}
		out[id] = row
	}
	return out
}

// compareValue says how cdcd's JSON value differs from MariaDB's rendering, or "" when they agree.
func compareValue(kind oracleKind, got json.RawMessage, want *string) string {
	if want == nil {
		if string(got) != "null" {
			return fmt.Sprintf("%s, want NULL", got)
		}
		return ""
	}
	if string(got) == "null" {
		return fmt.Sprintf("null, want %q", *want)
	}
	var str string
	isString := json.Unmarshal(got, &str) == nil
	num := string(got)
	switch kind {
	case okText:
		if !isString || str != *want {
			return fmt.Sprintf("%s, want %q", got, *want)
		}
	case okNumber, okBit:
		if isString {
			num = str // a decimal
		}
		if num != *want {
			return fmt.Sprintf("%s, want %s", got, *want)
		}
	case okFloat32:
		g, err1 := strconv.ParseFloat(num, 32)
		w, err2 := strconv.ParseFloat(*want, 32)
		if err1 != nil || err2 != nil || float32(g) != float32(w) {
			return fmt.Sprintf("%s, want the float %s", got, *want)
		}
	case okFloat64:
		g, err1 := strconv.ParseFloat(num, 64)
		w, err2 := strconv.ParseFloat(*want, 64)
		if err1 != nil || err2 != nil || g != w {
			return fmt.Sprintf("%s, want the double %s", got, *want)
		}
	case okHex:
		b, err := base64.StdEncoding.DecodeString(str)
		if !isString || err != nil || strings.ToUpper(hex.EncodeToString(b)) != *want {
			return fmt.Sprintf("%s, want hex %s", got, *want)
		}
	case okDatetime:
		if !isString || strings.Replace(str, "T", " ", 1) != *want {
			return fmt.Sprintf("%s, want %q", got, *want)
		}
	case okTimestamp:
		if strings.HasPrefix(*want, "0000-00-00") {
			if !isString || strings.Replace(str, "T", " ", 1) != *want {
				return fmt.Sprintf("%s, want %q", got, *want)
			}
			return ""
		}
		g, err1 := time.Parse(time.RFC3339Nano, str)
		w, err2 := time.ParseInLocation("2006-01-02 15:04:05.999999", *want, time.UTC)
		if !isString || err1 != nil || err2 != nil || !g.Equal(w) {
			return fmt.Sprintf("%s, want the instant %s UTC", got, *want)
		}
	case okYear:
		g, err1 := strconv.Atoi(num)
		w, err2 := strconv.Atoi(*want)
		if err1 != nil || err2 != nil || g != w {
			return fmt.Sprintf("%s, want year %s", got, *want)
		}
	}
	return ""
}

func (h *myHarness) compareRow(what string, got map[string]json.RawMessage, want map[string]*string) {
	h.t.Helper()
	for _, c := range valueColumns {
		v, ok := got[c.name]
		if !ok {
			h.t.Errorf("%s: column %s (%s) is missing", what, c.name, c.sqlType)
			continue
		}
		if d := compareValue(c.kind, v, want[c.name]); d != "" {
			h.t.Errorf("%s: column %s (%s) is %s", what, c.name, c.sqlType, d)
		}
	}
}

// TestMariaDBValues: every type, with edge values, NULLs and zero dates, through the snapshot and the
// stream, compared with what MariaDB itself returns for the committed rows.
func TestMariaDBValues(t *testing.T) {
	var ddl strings.Builder
	ddl.WriteString("CREATE TABLE {t}vals (id INT PRIMARY KEY")
	for _, c := range valueColumns {
		ddl.WriteString(", " + c.name + " " + c.sqlType)
	}
	ddl.WriteString(")")
	h := newMyHarness(t, ddl.String(), "")
	// Zero dates need a permissive sql_mode.
	h.exec("SET SESSION sql_mode = ''")
	h.insertValueRow(h.conn, 1)
	h.insertValueRow(h.conn, 3)
	snapshotOracle := h.oracleRows()
	h.history = nil // the snapshot carries these rows

	h.start()
	h.waitStreaming(60 * time.Second)
	h.insertValueRow(h.conn, 2)
	h.insertValueRow(h.conn, 4)
	streamOracle := h.oracleRows()
	if err := h.txn(h.conn,
		stmt{h.sql("UPDATE {t}vals SET biu = 18446744073709551614, d = -0.0001, f = -3.4028235e38, vc = 'changed', bn = x'01', ts = '2001-02-03 04:05:06.7', tm = '-12:34:56.789', st = 'b', b64 = b'0111', j = '{}' WHERE id = 1"), "vals:u:1"},
		stmt{h.sql("DELETE FROM {t}vals WHERE id = 3"), "vals:d:3"},
		stmt{h.sql("UPDATE {t}vals SET id = 5 WHERE id = 4"), "vals:u:5"},
	); err != nil {
		t.Fatal(err)
	}
	finalOracle := h.oracleRows()

	txns, changes := h.delivered(len(h.history)+1, 2*time.Minute)
	h.checkHistory(txns)
	state := map[string]map[string]json.RawMessage{}
	for _, c := range changes {
		switch {
		case c.txn == "snapshot":
			if c.op != "r" {
				t.Errorf("a snapshot change with op %s", c.op)
			}
			h.compareRow("snapshot row "+c.key, c.after, snapshotOracle[c.key])
		case c.op == "c":
			h.compareRow("inserted row "+c.key, c.after, streamOracle[c.key])
		case c.op == "u" && c.key == "5":
			// A key change: the before image carries the old key and the row as it was.
			h.compareRow("row 4 before its key changed", c.before, streamOracle["4"])
			delete(state, "4")
		case c.op == "u":
			h.compareRow("row "+c.key+" before the update", c.before, snapshotOracle[c.key])
		}
		if c.op == "d" {
			delete(state, c.key)
			continue
		}
		state[c.key] = c.after
	}
	if got, want := slices.Sorted(maps.Keys(state)), slices.Sorted(maps.Keys(finalOracle)); !slices.Equal(got, want) {
		t.Fatalf("the tcc's final state holds rows %v; MariaDB holds %v", got, want)
	}
	for id, row := range finalOracle {
		h.compareRow("final row "+id, state[id], row)
	}
}

// myBank is a mixed multi-table workload: transfers between accounts (two updates and an audit
// insert), new accounts, closed accounts (a delete), each its own transaction.
type myBank struct {
	h        *myHarness
	rng      *rand.Rand
	accounts []int
	nextAcct int
	nextLog  int
}

const myBankDDL = `CREATE TABLE {t}accounts (id INT PRIMARY KEY, balance DECIMAL(20,4) NOT NULL, note VARCHAR(40));
CREATE TABLE {t}ledger (id BIGINT UNSIGNED PRIMARY KEY, acct INT NOT NULL, amount DECIMAL(20,4) NOT NULL, at DATETIME(6) NOT NULL)`

func (b *myBank) step(conn *client.Conn) error {
	r := b.rng.IntN(10)
	switch {
	case r < 2 || len(b.accounts) < 2:
		b.nextAcct++
		id := b.nextAcct
		if err := b.h.txn(conn, stmt{fmt.Sprintf("INSERT INTO {t}accounts VALUES (%d, 1000.0000, 'opened')", id), fmt.Sprintf("accounts:c:%d", id)}); err != nil {
			return err
		}
		b.accounts = append(b.accounts, id)
	case r < 3:
		i := b.rng.IntN(len(b.accounts))
		id := b.accounts[i]
		if err := b.h.txn(conn, stmt{fmt.Sprintf("DELETE FROM {t}accounts WHERE id = %d", id), fmt.Sprintf("accounts:d:%d", id)}); err != nil {
			return err
		}
		b.accounts = slices.Delete(b.accounts, i, i+1)
	default:
		from, to := b.accounts[b.rng.IntN(len(b.accounts))], b.accounts[b.rng.IntN(len(b.accounts))]
		if from == to {
			return nil
		}
		amount := fmt.Sprintf("%d.%04d", 1+b.rng.IntN(100), b.rng.IntN(10000))
		b.nextLog++
		if err := b.h.txn(conn,
			stmt{fmt.Sprintf("UPDATE {t}accounts SET balance = balance - %s, note = 'sent %d' WHERE id = %d", amount, b.nextLog, from), fmt.Sprintf("accounts:u:%d", from)},
			stmt{fmt.Sprintf("UPDATE {t}accounts SET balance = balance + %s, note = 'got %d' WHERE id = %d", amount, b.nextLog, to), fmt.Sprintf("accounts:u:%d", to)},
			stmt{fmt.Sprintf("INSERT INTO {t}ledger VALUES (%d, %d, %s, NOW(6))", b.nextLog, from, amount), fmt.Sprintf("ledger:c:%d", b.nextLog)},
		); err != nil {
			return err
		}
	}
	return nil
}

// run commits bank steps on conn, pause apart, until the returned stop is called; stop returns the
// first error a step met (the steps end there), and may be called more than once.
func (b *myBank) run(conn *client.Conn, pause time.Duration) (stop func() error) {
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-quit:
				done <- nil
				return
			default:
			}
			if err := b.step(conn); err != nil {
				done <- err
				return
			}
			time.Sleep(pause)
		}
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { close(quit); err = <-done })
		return err
	}
}

// TestMariaDBCrashRecovery: cdcd killed with SIGKILL at random moments under a mixed workload (20
// times, more with CDCD_TEST_CRASH_KILLS), then MariaDB itself killed and restarted under load, then
// the broker; every committed transaction reaches the tcc once, in commit order, change by change.
func TestMariaDBCrashRecovery(t *testing.T) {
	h := newMyHarness(t, myBankDDL, "")
	kills := 20
	if n, err := strconv.Atoi(os.Getenv("CDCD_TEST_CRASH_KILLS")); err == nil && n > kills {
		kills = n
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	bank := &myBank{h: h, rng: rand.New(rand.NewPCG(rng.Uint64(), 11))}
	h.start()
	h.waitStreaming(60 * time.Second)

	workConn := h.connect()
	stop := make(chan struct{})
	done := make(chan error, 1)
	paused := make(chan chan struct{})
	go func() {
		conn := workConn
		for {
			select {
			case <-stop:
				done <- nil
				return
			case resume := <-paused:
				<-resume
				conn.Close()
				conn = h.connect()
				continue
			default:
			}
			if err := bank.step(conn); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := range kills {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		h.proc.signal(syscall.SIGKILL)
		h.start()
		if i%5 == 4 {
			h.waitStreaming(60 * time.Second)
		}
	}
	h.waitStreaming(60 * time.Second)

	// MariaDB killed under load: the workload waits for it, cdcd retries.
	resume := make(chan struct{})
	paused <- resume
	testenv.Stack(t, "crash", "mariadb")
	time.Sleep(2 * time.Second)
	testenv.Stack(t, "up", "mariadb")
	close(resume)
	h.conn.Close()
	h.conn = h.connect()
	time.Sleep(3 * time.Second)

	// The broker killed under load.
	testenv.Stack(t, "crash", "kafka")
	time.Sleep(2 * time.Second)
	testenv.Stack(t, "up", "kafka")
	time.Sleep(3 * time.Second)
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("the workload: %v", err)
	}
	if exited, code := h.proc.exited(0); exited {
		t.Fatalf("cdcd exited (%d) instead of retrying", code)
	}
	t.Logf("%d transactions committed across %d kills of cdcd, one of MariaDB, one of Kafka", len(h.history), kills)
	txns, _ := h.delivered(len(h.history)+1, 3*time.Minute)
	h.checkHistory(txns)
}

// gtidSeq is the sequence number of a MariaDB GTID ("0-1-42") or of a one-domain GTID position.
func gtidSeq(t *testing.T, gtid string) uint64 {
	t.Helper()
	gtid, _, _ = strings.Cut(gtid, ";")
	n, err := strconv.ParseUint(gtid[strings.LastIndexByte(gtid, '-')+1:], 10, 64)
	if err != nil {
		t.Fatalf("GTID %q: %v", gtid, err)
	}
	return n
}

// TestMariaDBSnapshotUnderWritesAndACrash: cdcd killed in the middle of its initial snapshot starts
// it over; the second snapshot runs slowly while a workload commits, and the snapshot plus the stream
// after its position give exactly the table MariaDB holds, every transaction after the snapshot's
// position once, in commit order, and none from before it.
func TestMariaDBSnapshotUnderWritesAndACrash(t *testing.T) {
	h := newMyHarness(t, myBankDDL, "")
	const initial = 5000
	h.exec(h.sql(fmt.Sprintf("INSERT INTO {t}accounts SELECT seq, 1000.0000, 'opened' FROM seq_1_to_%d", initial)))
	h.history = nil
	bank := &myBank{h: h, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3)), nextAcct: initial}
	for id := 1; id <= initial; id++ {
		bank.accounts = append(bank.accounts, id)
	}

	h.env = []string{"FAILPOINTS=mysql.snapshot-row=kill@3000"}
	h.start()
	if exited, _ := h.proc.exited(time.Minute); !exited || !strings.Contains(h.proc.log(), "failpoint mysql.snapshot-row fired") {
		t.Fatalf("cdcd was not killed inside the snapshot:\n%s", h.proc.tail(20))
	}

	h.env = []string{"FAILPOINTS=mysql.snapshot-row=sleep:1ms"}
	conn := h.connect()
	defer conn.Close()
	stopWorkload := bank.run(conn, 2*time.Millisecond)
	defer stopWorkload() // before conn closes, when the test ends early
	time.Sleep(200 * time.Millisecond)
	h.start()
	h.waitStreaming(2 * time.Minute)
	time.Sleep(time.Second)
	if err := stopWorkload(); err != nil {
		t.Fatal(err)
	}

	first, _ := h.delivered(1, time.Minute)
	if first[0].gtid != "snapshot" {
		t.Fatalf("the first transaction is %s, not the snapshot", first[0].gtid)
	}
	point := gtidSeq(t, first[0].pos)
	var after []myTxn
	for _, x := range h.history {
		if gtidSeq(t, x.gtid) > point {
			after = append(after, x)
		}
	}
	t.Logf("snapshot consistent with %s; %d of %d workload transactions committed after it", first[0].pos, len(after), len(h.history))
	if len(after) == 0 || len(after) == len(h.history) {
		t.Errorf("the workload did not overlap the snapshot (%d of %d after it)", len(after), len(h.history))
	}
	txns, changes := h.delivered(1+len(after), 2*time.Minute)
	h.checkHistoryOf(txns, after)

	state := map[string]string{}
	for _, c := range changes {
		if c.table != "accounts" {
			continue
		}
		if c.op == "d" {
			delete(state, c.key)
			continue
		}
		state[c.key] = string(c.after["balance"])
	}
	res, err := h.conn.Execute(h.sql("SELECT id, CAST(balance AS CHAR) FROM {t}accounts"))
	if err != nil {
		t.Fatal(err)
	}
	if res.RowNumber() != len(state) {
		t.Errorf("the tcc's state holds %d accounts; MariaDB holds %d", len(state), res.RowNumber())
	}
	for i := range res.RowNumber() {
		id, _ := res.GetString(i, 0)
		balance, _ := res.GetString(i, 1)
		if got := state[id]; got != `"`+balance+`"` {
			t.Errorf("account %s: the tcc's state has balance %s; MariaDB has %s", id, got, balance)
		}
	}
}
