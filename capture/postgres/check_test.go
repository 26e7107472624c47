package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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

// TestCheckTLS runs the checks over TLS with sslmode=verify-full against the stack's PostgreSQL, whose
// certificate names localhost, and makes each kind of TLS failure happen for real.
func TestCheckTLS(t *testing.T) {
	dsn := testenv.PostgresTLSDSN(t)
	withURL := func(change func(u *url.URL, q url.Values)) string { return testenv.EditDSN(t, dsn, change) }
	refuser := refusesTLS(t)
	for _, tc := range []struct {
		name, dsn string
		fix       []string // empty: both connections work
	}{
		{"verify-full", dsn, nil},
		{"wrong server name", withURL(func(u *url.URL, _ url.Values) { u.Host = strings.Replace(u.Host, "localhost", "127.0.0.1", 1) }),
			[]string{"certificate is for localhost", "not for 127.0.0.1", "host in source.postgres.dsn", "sslmode=verify-ca"}},
		{"untrusted CA", withURL(func(_ *url.URL, q url.Values) { q.Set("sslrootcert", testenv.NewCA(t, "some other CA").File) }),
			[]string{"not signed by a CA cdcd trusts", "sslrootcert"}},
		{"server without TLS", withURL(func(u *url.URL, q url.Values) { u.Host = refuser; q.Set("sslmode", "require") }),
			[]string{"does not accept TLS", "sslmode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := check(t, CheckConfig{DSN: tc.dsn, Slot: "tls_check", Publication: "tls_check"})
			if tc.fix == nil {
				finding(t, r, preflight.OK, "connection")
				finding(t, r, preflight.OK, "replication connection")
				return
			}
			f := finding(t, r, preflight.Problem, "connection")
			for _, want := range tc.fix {
				if !strings.Contains(f.Fix, want) {
					t.Errorf("fix %q does not say %q", f.Fix, want)
				}
			}
			if strings.Contains(f.Detail+f.Fix, "cdc:cdc") {
				t.Errorf("the password leaked into the report: %s", f.Detail)
			}
		})
	}
}

// refusesTLS listens on loopback and answers every SSLRequest with 'N', as a server with ssl=off does.
func refusesTLS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var req [8]byte
				if _, err := io.ReadFull(c, req[:]); err == nil {
					_, _ = c.Write([]byte{'N'})
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTLSFix(t *testing.T) {
	cert := &x509.Certificate{DNSNames: []string{"db.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.5")}}
	for _, tc := range []struct {
		name string
		err  error
		want string // "" means not a TLS failure
	}{
		{"wrong name", fmt.Errorf("tls error: %w", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: cert, Host: "127.0.0.1"}}),
			"certificate is for db.example, 10.0.0.5, not for 127.0.0.1"},
		{"unknown CA", fmt.Errorf("tls error: %w", x509.UnknownAuthorityError{}), "sslrootcert"},
		{"expired", fmt.Errorf("tls error: %w", x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired, Detail: "current time is after 2020-01-01"}),
			"not valid (x509: certificate has expired or is not yet valid: current time is after 2020-01-01): renew it"},
		{"refused", errors.New("failed to connect: server refused TLS connection"), "does not accept TLS"},
		{"wrong password", &pgconn.PgError{Code: "28P01"}, ""},
		{"down", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tlsFix(tc.err)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("tlsFix = %q, want it to say %q", got, tc.want)
			}
		})
	}
}
