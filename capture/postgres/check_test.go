package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

func check(t *testing.T, cfg CheckConfig) *preflight.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r preflight.Report
	if err := Check(ctx, cfg, &r); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_, _ = r.WriteTo(&b)
	t.Logf("report:\n%s", b.String())
	return &r
}

func finding(t *testing.T, r *preflight.Report, sev preflight.Severity, what string) preflight.Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Severity == sev && f.What == what {
			return f
		}
	}
	t.Fatalf("no %s finding for %q", sev, what)
	return preflight.Finding{}
}

func TestCheckWalLevelReplica(t *testing.T) {
	dsn := testenv.ScratchPostgres(t, "walreplica", 15499, "wal_level=replica")
	r := check(t, CheckConfig{DSN: dsn, Slot: "cdcd", Publication: "cdcd"})
	f := finding(t, r, preflight.Problem, "wal_level")
	if !strings.Contains(f.Detail, `"replica"`) || !strings.Contains(f.Fix, "wal_level = logical") || !strings.Contains(f.Fix, "restart") {
		t.Errorf("wal_level finding does not name the value and the fix: %+v", f)
	}
}

func TestCheckStackHoldsEverything(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	conn := connect(t, dsn)
	table := "public.check_ok_" + fmt.Sprint(rand.IntN(1_000_000))
	mustExec(t, conn, "CREATE TABLE "+table+" (id int PRIMARY KEY)")
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE "+table) })
	r := check(t, CheckConfig{DSN: dsn, Slot: "check_ok_slot", Publication: "check_ok_pub", Tables: []string{table}})
	if r.Problems() != 0 {
		t.Fatalf("%d problems against the stack's PostgreSQL", r.Problems())
	}
	finding(t, r, preflight.OK, "replication connection")
	finding(t, r, preflight.OK, "publication check_ok_pub")
}

// TestCheckDescribesKeys: validate names the columns records are keyed by, the identity index's
// where REPLICA IDENTITY USING INDEX names one other than the primary key.
func TestCheckDescribesKeys(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	conn := connect(t, dsn)
	suffix := fmt.Sprint(rand.IntN(1_000_000))
	byIndex, byPK := "public.ident_idx_"+suffix, "public.ident_pk_"+suffix
	mustExec(t, conn, "CREATE TABLE "+byIndex+" (id int PRIMARY KEY, code text NOT NULL, v text, CONSTRAINT code_"+suffix+" UNIQUE (code))")
	mustExec(t, conn, "ALTER TABLE "+byIndex+" REPLICA IDENTITY USING INDEX code_"+suffix)
	mustExec(t, conn, "CREATE TABLE "+byPK+" (a int, b int, v text, PRIMARY KEY (a, b))")
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE "+byIndex+", "+byPK) })
	r := check(t, CheckConfig{DSN: dsn, Slot: "keys_slot", Publication: "keys_pub", Tables: []string{byIndex, byPK}})
	if f := finding(t, r, preflight.OK, "table "+byIndex); !strings.Contains(f.Detail, "identity index's columns (code)") || !strings.Contains(f.Detail, "not by the primary key (id)") {
		t.Errorf("identity-index table: %+v", f)
	}
	if f := finding(t, r, preflight.OK, "table "+byPK); !strings.Contains(f.Detail, "primary key (a, b)") {
		t.Errorf("primary-key table: %+v", f)
	}
}

func TestCheckFindsMissingPrerequisites(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	admin := connect(t, testenv.PostgresAdminDSN(t))
	suffix := fmt.Sprint(rand.IntN(1_000_000))
	role := "norepl_" + suffix
	mustExec(t, admin, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", role))
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	keyless := "public.keyless_" + suffix
	mustExec(t, admin, "CREATE TABLE "+keyless+" (v text)")
	mustExec(t, admin, "GRANT SELECT ON "+keyless+" TO "+role)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP TABLE "+keyless) })

	// An active slot: another replication connection holds it.
	slot := "busy_" + suffix
	rc, err := ConnectReplication(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(context.Background())
	created, err := pglogrepl.CreateReplicationSlot(context.Background(), rc, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{Temporary: true})
	if err != nil {
		t.Fatal(err)
	}
	startLSN, _ := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err := pglogrepl.StartReplication(context.Background(), rc, slot, startLSN, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'none'"}}); err != nil {
		t.Fatal(err)
	}

	u := strings.Replace(dsn, "cdc:cdc@", role+":pw@", 1)
	r := check(t, CheckConfig{DSN: u, Slot: slot, Publication: "nopub_" + suffix, Tables: []string{keyless, "public.missing_" + suffix}})
	if f := finding(t, r, preflight.Problem, "replication privilege"); !strings.Contains(f.Fix, "ALTER ROLE "+`"`+role+`"`+" REPLICATION") {
		t.Errorf("replication fix = %q", f.Fix)
	}
	if f := finding(t, r, preflight.Problem, "table public.missing_"+suffix); !strings.Contains(f.Fix, "source.postgres.tables") {
		t.Errorf("missing table fix = %q", f.Fix)
	}
	if f := finding(t, r, preflight.Warning, "table "+keyless); !strings.Contains(f.Fix, "REPLICA IDENTITY FULL") {
		t.Errorf("keyless table fix = %q", f.Fix)
	}
	if f := finding(t, r, preflight.Problem, "publication nopub_"+suffix); !strings.Contains(f.Detail, "may not create") || !strings.Contains(f.Fix, `GRANT CREATE ON DATABASE "cdcd" TO "`+role+`"`) {
		t.Errorf("publication finding = %+v", f)
	}
	if f := finding(t, r, preflight.Problem, "slot "+slot); !strings.Contains(f.Detail, "in use") {
		t.Errorf("slot finding = %+v", f)
	}
}

func TestCheckUnreachable(t *testing.T) {
	r := check(t, CheckConfig{DSN: "postgres://cdc:cdc@127.0.0.1:1/cdcd?sslmode=disable&connect_timeout=2", Slot: "s", Publication: "p"})
	f := finding(t, r, preflight.Problem, "connection")
	if !strings.Contains(f.Detail, "port=1") || !strings.Contains(f.Fix, "start PostgreSQL") {
		t.Errorf("connection finding = %+v", f)
	}
	if strings.Contains(f.Detail, "cdc:cdc") {
		t.Errorf("the password leaked into the report: %s", f.Detail)
	}
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
