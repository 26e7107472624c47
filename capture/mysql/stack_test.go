package mysql

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestStackBinlogGTIDWithColumnNames proves the stack's MariaDB gives what capture needs: a replica
// started from a GTID position receives the transaction's GTID, a table map carrying column names
// and unsignedness (binlog_row_metadata=FULL), the row values, and the XID that commits it.
func TestStackBinlogGTIDWithColumnNames(t *testing.T) {
	m := testenv.MariaDB(t)
	conn, err := client.Connect(m.Addr, m.User, m.Password, m.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	table := fmt.Sprintf("stack_probe_%06d", rand.IntN(1_000_000))
	if _, err := conn.Execute("CREATE TABLE " + table + " (id INT PRIMARY KEY, note VARCHAR(20), amount INT UNSIGNED)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Execute("DROP TABLE IF EXISTS " + table) })

	res, err := conn.Execute("SELECT @@gtid_current_pos")
	if err != nil {
		t.Fatal(err)
	}
	pos, _ := res.GetString(0, 0)
	gset, err := gomysql.ParseMariadbGTIDSet(pos)
	if err != nil {
		t.Fatalf("parsing gtid_current_pos %q: %v", pos, err)
	}

	host, portStr, _ := net.SplitHostPort(m.Addr)
	port, _ := strconv.Atoi(portStr)
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: uint32(10_000 + rand.IntN(50_000)), Flavor: gomysql.MariaDBFlavor,
		Host: host, Port: uint16(port), User: m.User, Password: m.Password, UseDecimal: true,
	})
	defer syncer.Close()
	streamer, err := syncer.StartSyncGTID(gset)
	if err != nil {
		t.Fatalf("starting a GTID binlog stream: %v", err)
	}
	if _, err := conn.Execute("INSERT INTO " + table + " VALUES (1, 'hello', 4294967295)"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var gtid string
	var columns []string
	var row []any
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			t.Fatalf("reading the binlog: %v (gtid=%q columns=%v row=%v)", err, gtid, columns, row)
		}
		switch e := ev.Event.(type) {
		case *replication.MariadbGTIDEvent:
			gtid = e.GTID.String()
		case *replication.TableMapEvent:
			if string(e.Table) == table {
				columns = slices.Clone(e.ColumnNameString())
			}
		case *replication.RowsEvent:
			if string(e.Table.Table) == table {
				row = e.Rows[0]
			}
		case *replication.XIDEvent:
			if row == nil {
				continue // the CREATE TABLE or another test's transaction
			}
			if gtid == "" || !strings.HasPrefix(gtid, "0-1-") {
				t.Errorf("GTID = %q, want domain 0, server 1", gtid)
			}
			if fmt.Sprint(columns) != "[id note amount]" {
				t.Errorf("column names = %v, want [id note amount] (binlog_row_metadata=FULL)", columns)
			}
			if fmt.Sprint(row) != "[1 hello 4294967295]" {
				t.Errorf("row = %v, want [1 hello 4294967295]", row)
			}
			return
		}
	}
}

func TestCheckStackHoldsEverything(t *testing.T) {
	m := testenv.MariaDB(t)
	var r preflight.Report
	if err := Check(context.Background(), CheckConfig{Addr: m.Addr, User: m.User, Password: m.Password, ServerID: 4021}, &r); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_, _ = r.WriteTo(&b)
	t.Logf("report:\n%s", b.String())
	if r.Problems() != 0 {
		t.Fatalf("%d problems against the stack's MariaDB", r.Problems())
	}
	for _, what := range []string{"binlog_format", "binlog_row_image", "binlog_row_metadata", "gtid_strict_mode", "privileges"} {
		if !r.Has(preflight.OK, "mariadb", what) {
			t.Errorf("no ok finding for %s", what)
		}
	}
}

func TestCheckFindsMissingPrerequisites(t *testing.T) {
	m := testenv.MariaDB(t)
	conn, err := client.Connect(m.Addr, m.User, m.Password, m.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	table := fmt.Sprintf("keyless_%06d", rand.IntN(1_000_000))
	if _, err := conn.Execute("CREATE TABLE " + table + " (v INT)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Execute("DROP TABLE IF EXISTS " + table) })

	var r preflight.Report
	cfg := CheckConfig{Addr: m.Addr, User: m.User, Password: m.Password, ServerID: 1,
		Tables: []string{m.Database + "." + table, m.Database + ".missing_table"}}
	if err := Check(context.Background(), cfg, &r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		sev  preflight.Severity
		what string
	}{
		{preflight.Problem, "server_id"},
		{preflight.Warning, "table " + m.Database + "." + table},
		{preflight.Problem, "table " + m.Database + ".missing_table"},
	} {
		if !r.Has(want.sev, "mariadb", want.what) {
			t.Errorf("no %s finding for %s in %+v", want.sev, want.what, r.Findings)
		}
	}

	r = preflight.Report{}
	cfg = CheckConfig{Addr: m.Addr, User: m.User, Password: "wrong", ServerID: 4021}
	if err := Check(context.Background(), cfg, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Has(preflight.Problem, "mysql", "connection") || !strings.Contains(r.Findings[0].Fix, "source.mysql.password") {
		t.Errorf("a wrong password gives %+v", r.Findings)
	}
}

// TestCheckSignalTable: a missing signal table, and one without the columns cdcd writes, are
// problems naming the CREATE TABLE to run; a proper one the stack's user may write is fine.
func TestCheckSignalTable(t *testing.T) {
	m := testenv.MariaDB(t)
	conn, err := client.Connect(m.Addr, m.User, m.Password, m.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	suffix := fmt.Sprintf("%06d", rand.IntN(1_000_000))
	good, bad := "signal_"+suffix, "badsignal_"+suffix
	for _, q := range []string{
		"CREATE TABLE " + good + " (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)",
		"CREATE TABLE " + bad + " (id VARCHAR(64) PRIMARY KEY, kind VARCHAR(32))",
	} {
		if _, err := conn.Execute(q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = conn.Execute("DROP TABLE IF EXISTS " + good + ", " + bad) })
	for _, tc := range []struct {
		table string
		sev   preflight.Severity
		fix   string
	}{
		{m.Database + "." + good, preflight.OK, ""},
		{m.Database + "." + bad, preflight.Problem, "CREATE TABLE"},
		{m.Database + ".missing_" + suffix, preflight.Problem, "CREATE TABLE"},
	} {
		var r preflight.Report
		if err := Check(context.Background(), CheckConfig{Addr: m.Addr, User: m.User, Password: m.Password, ServerID: 4021, SignalTable: tc.table}, &r); err != nil {
			t.Fatal(err)
		}
		if !r.Has(tc.sev, "mariadb", "signal_table") {
			t.Errorf("%s: no %s finding in %+v", tc.table, tc.sev, r.Findings)
			continue
		}
		for _, f := range r.Findings {
			if f.What == "signal_table" && !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("%s: the fix %q does not say %s", tc.table, f.Fix, tc.fix)
			}
		}
	}
}
