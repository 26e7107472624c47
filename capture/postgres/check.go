package postgres

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcd-dev/cdcd/internal/preflight"
)

const component = "postgres"

// CheckConfig is what Check needs to know of the capture configuration.
type CheckConfig struct {
	DSN         string
	Slot        string
	Publication string
	// Tables are schema-qualified; empty means all tables.
	Tables []string
}

// Check connects to the database as cdcd would and adds to r a finding for every prerequisite of
// logical capture: server settings, the role's rights, the replication connection, the tables, the
// publication and the slot. It never changes the database. It returns an error only when ctx ends.
func Check(ctx context.Context, cfg CheckConfig, r *preflight.Report) error {
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.Problem(component, "connection", fmt.Sprintf("cannot connect with source.postgres.dsn (%s): %v", redactDSN(cfg.DSN), err),
			connectFix(err))
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	r.OK(component, "connection", fmt.Sprintf("connected to %s as %s", conn.PgConn().Conn().RemoteAddr(), conn.Config().User))

	steps := []func(context.Context, *pgx.Conn, CheckConfig, *preflight.Report) error{
		checkVersion, checkSettings, checkRole, checkTables, checkPublication, checkSlot,
	}
	for _, step := range steps {
		if err := step(ctx, conn, cfg, r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.Problem(component, "query", err.Error(), "check that the server is healthy and the role may read the system catalogs")
		}
	}
	checkReplicationConnection(ctx, cfg, r)
	return ctx.Err()
}

func checkVersion(ctx context.Context, conn *pgx.Conn, _ CheckConfig, r *preflight.Report) error {
	var num int
	var version string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')").Scan(&num, &version); err != nil {
		return fmt.Errorf("reading server_version: %w", err)
	}
	if num < 100000 {
		r.Problem(component, "server version", "PostgreSQL "+version+" has no pgoutput", "upgrade to PostgreSQL 10 or newer (14 or newer recommended)")
		return nil
	}
	r.OK(component, "server version", "PostgreSQL "+version)
	return nil
}

func checkSettings(ctx context.Context, conn *pgx.Conn, _ CheckConfig, r *preflight.Report) error {
	var walLevel string
	var slots, senders, usedSlots int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_replication_slots)::int`).Scan(&walLevel, &slots, &senders, &usedSlots)
	if err != nil {
		return fmt.Errorf("reading server settings: %w", err)
	}
	if walLevel != "logical" {
		r.Problem(component, "wal_level", fmt.Sprintf("wal_level is %q; logical decoding needs \"logical\"", walLevel),
			"run ALTER SYSTEM SET wal_level = logical; as a superuser (or set it in postgresql.conf), then restart PostgreSQL")
	} else {
		r.OK(component, "wal_level", "logical")
	}
	if slots == 0 {
		r.Problem(component, "max_replication_slots", "max_replication_slots is 0",
			"set max_replication_slots to at least 1 more than the slots in use (e.g. 10) and restart PostgreSQL")
	} else {
		r.OK(component, "max_replication_slots", fmt.Sprintf("%d (%d in use)", slots, usedSlots))
	}
	if senders == 0 {
		r.Problem(component, "max_wal_senders", "max_wal_senders is 0",
			"set max_wal_senders to at least 1 more than the replication connections in use (e.g. 10) and restart PostgreSQL")
	} else {
		r.OK(component, "max_wal_senders", fmt.Sprint(senders))
	}
	return nil
}

func checkRole(ctx context.Context, conn *pgx.Conn, _ CheckConfig, r *preflight.Report) error {
	var user string
	var replication, super bool
	if err := conn.QueryRow(ctx, "SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&user, &replication, &super); err != nil {
		return fmt.Errorf("reading the role's attributes: %w", err)
	}
	if replication || super {
		r.OK(component, "replication privilege", fmt.Sprintf("role %s may use logical replication", user))
		return nil
	}
	r.Problem(component, "replication privilege", fmt.Sprintf("role %s lacks the REPLICATION attribute", user),
		fmt.Sprintf("run ALTER ROLE %s REPLICATION; as a superuser", pgx.Identifier{user}.Sanitize()))
	return nil
}

// tableInfo is what capture needs to know of one table.
type tableInfo struct {
	name        string // schema.table as configured
	oid         uint32
	identity    byte // relreplident: d default, f full, i index, n nothing
	hasKey      bool
	owned       bool
	selectRight bool
}

func lookupTables(ctx context.Context, conn *pgx.Conn, names []string) (found []tableInfo, missing []string, err error) {
	for _, name := range names {
		schema, table, _ := strings.Cut(name, ".")
		var ti tableInfo
		ti.name = name
		err := conn.QueryRow(ctx, `SELECT c.oid, c.relreplident,
				EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
				pg_has_role(c.relowner, 'USAGE'),
				has_table_privilege(c.oid, 'SELECT')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, table).
			Scan(&ti.oid, &ti.identity, &ti.hasKey, &ti.owned, &ti.selectRight)
		if errors.Is(err, pgx.ErrNoRows) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("looking up table %s: %w", name, err)
		}
		found = append(found, ti)
	}
	return found, missing, nil
}

func checkTables(ctx context.Context, conn *pgx.Conn, cfg CheckConfig, r *preflight.Report) error {
	if len(cfg.Tables) == 0 {
		r.OK(component, "tables", "none listed: every table of the publication is captured")
		return nil
	}
	found, missing, err := lookupTables(ctx, conn, cfg.Tables)
	if err != nil {
		return err
	}
	for _, name := range missing {
		r.Problem(component, "table "+name, "does not exist (or is not an ordinary or partitioned table)",
			"create it, or correct or remove it in source.postgres.tables (names are schema.table, case-sensitive)")
	}
	for _, t := range found {
		what := "table " + t.name
		if !t.selectRight {
			r.Problem(component, what, "the role may not SELECT from it, which the initial snapshot needs",
				fmt.Sprintf("run GRANT SELECT ON %s TO <cdcd role>;", quoteQualified(t.name)))
			continue
		}
		pk, err := indexColumns(ctx, conn, t.oid, "indisprimary")
		if err != nil {
			return err
		}
		switch {
		case t.identity == 'n':
			r.Warn(component, what, "REPLICA IDENTITY NOTHING: updates and deletes carry no old row and cannot be keyed",
				fmt.Sprintf("run ALTER TABLE %s REPLICA IDENTITY FULL; (or add a primary key)", quoteQualified(t.name)))
		case t.identity == 'd' && !t.hasKey:
			r.Warn(component, what, "no primary key and REPLICA IDENTITY DEFAULT: updates and deletes carry no old row and cannot be keyed",
				fmt.Sprintf("add a primary key, or run ALTER TABLE %s REPLICA IDENTITY FULL;", quoteQualified(t.name)))
		case t.identity == 'f' && len(pk) > 0:
			r.OK(component, what, fmt.Sprintf("REPLICA IDENTITY FULL: complete before images; records keyed by the primary key (%s)", strings.Join(pk, ", ")))
		case t.identity == 'f':
			r.OK(component, what, "REPLICA IDENTITY FULL: complete before images; no primary key, so records carry no key")
		case t.identity == 'i':
			ident, err := indexColumns(ctx, conn, t.oid, "indisreplident")
			if err != nil {
				return err
			}
			detail := fmt.Sprintf("REPLICA IDENTITY USING INDEX: records keyed by the identity index's columns (%s), which are all that before images hold", strings.Join(ident, ", "))
			if len(pk) > 0 && !slices.Equal(pk, ident) {
				detail += fmt.Sprintf(", not by the primary key (%s); updating them is a key change (a delete of the old key, then the new row)", strings.Join(pk, ", "))
			}
			r.OK(component, what, detail)
		default:
			r.OK(component, what, fmt.Sprintf("records keyed by the primary key (%s); before images hold the key columns only (REPLICA IDENTITY FULL gives whole rows)", strings.Join(pk, ", ")))
		}
	}
	return nil
}

// indexColumns lists, in column order, the columns of the table's index that has flag set
// (indisprimary or indisreplident).
func indexColumns(ctx context.Context, conn *pgx.Conn, oid uint32, flag string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])
		WHERE i.indrelid = $1 AND i.`+flag+` ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("reading the key columns of relation %d: %w", oid, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func checkPublication(ctx context.Context, conn *pgx.Conn, cfg CheckConfig, r *preflight.Report) error {
	what := "publication " + cfg.Publication
	var allTables, ins, upd, del, trunc bool
	err := conn.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&allTables, &ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		return checkCanCreatePublication(ctx, conn, cfg, r)
	}
	if err != nil {
		return fmt.Errorf("reading publication %s: %w", cfg.Publication, err)
	}
	var missingOps []string
	for op, on := range map[string]bool{"insert": ins, "update": upd, "delete": del, "truncate": trunc} {
		if !on {
			missingOps = append(missingOps, op)
		}
	}
	if len(missingOps) > 0 {
		r.Problem(component, what, "does not publish "+strings.Join(missingOps, ", "),
			fmt.Sprintf("run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", pgx.Identifier{cfg.Publication}.Sanitize()))
	}
	if allTables {
		r.OK(component, what, "exists, FOR ALL TABLES")
		return nil
	}
	var unpublished []string
	for _, t := range cfg.Tables {
		schema, table, _ := strings.Cut(t, ".")
		var in bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
			WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`, cfg.Publication, schema, table).Scan(&in); err != nil {
			return fmt.Errorf("reading the tables of publication %s: %w", cfg.Publication, err)
		}
		if !in {
			unpublished = append(unpublished, t)
		}
	}
	if len(unpublished) > 0 {
		quoted := make([]string, len(unpublished))
		for i, t := range unpublished {
			quoted[i] = quoteQualified(t)
		}
		r.Problem(component, what, "exists but does not include "+strings.Join(unpublished, ", "),
			fmt.Sprintf("run ALTER PUBLICATION %s ADD TABLE %s; as the tables' owner", pgx.Identifier{cfg.Publication}.Sanitize(), strings.Join(quoted, ", ")))
		return nil
	}
	r.OK(component, what, "exists and covers the configured tables")
	return nil
}

// checkCanCreatePublication: cdcd creates a missing publication on start; that needs superuser for
// FOR ALL TABLES, or ownership of every listed table plus CREATE on the database.
func checkCanCreatePublication(ctx context.Context, conn *pgx.Conn, cfg CheckConfig, r *preflight.Report) error {
	what := "publication " + cfg.Publication
	var user, db string
	var super, create bool
	if err := conn.QueryRow(ctx, `SELECT current_user, current_database(), rolsuper,
		has_database_privilege(current_database(), 'CREATE') FROM pg_roles WHERE rolname = current_user`).
		Scan(&user, &db, &super, &create); err != nil {
		return fmt.Errorf("reading the role's rights: %w", err)
	}
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	if len(cfg.Tables) == 0 {
		if super {
			r.OK(component, what, "does not exist yet; cdcd will create it FOR ALL TABLES")
		} else {
			r.Problem(component, what, "does not exist, and creating one FOR ALL TABLES needs a superuser",
				fmt.Sprintf("as a superuser run CREATE PUBLICATION %s FOR ALL TABLES; or list the tables in source.postgres.tables", pub))
		}
		return nil
	}
	found, _, err := lookupTables(ctx, conn, cfg.Tables)
	if err != nil {
		return err
	}
	var notOwned []string
	for _, t := range found {
		if !t.owned && !super {
			notOwned = append(notOwned, t.name)
		}
	}
	quoted := make([]string, len(cfg.Tables))
	for i, t := range cfg.Tables {
		quoted[i] = quoteQualified(t)
	}
	createSQL := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s;", pub, strings.Join(quoted, ", "))
	switch {
	case !create && !super:
		r.Problem(component, what, fmt.Sprintf("does not exist, and role %s may not create one (no CREATE on database %s)", user, db),
			fmt.Sprintf("run GRANT CREATE ON DATABASE %s TO %s; or have the tables' owner run %s",
				pgx.Identifier{db}.Sanitize(), pgx.Identifier{user}.Sanitize(), createSQL))
	case len(notOwned) > 0:
		r.Problem(component, what, fmt.Sprintf("does not exist, and role %s does not own %s", user, strings.Join(notOwned, ", ")),
			"have the tables' owner (or a superuser) run "+createSQL)
	default:
		r.OK(component, what, "does not exist yet; cdcd will create it for the configured tables")
	}
	return nil
}

func checkSlot(ctx context.Context, conn *pgx.Conn, cfg CheckConfig, r *preflight.Report) error {
	what := "slot " + cfg.Slot
	var plugin, slotType string
	var database *string
	var activePID *int32
	err := conn.QueryRow(ctx, `SELECT coalesce(plugin, ''), slot_type, database, active_pid
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&plugin, &slotType, &database, &activePID)
	if errors.Is(err, pgx.ErrNoRows) {
		var free int
		if err := conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int`).Scan(&free); err != nil {
			return fmt.Errorf("counting replication slots: %w", err)
		}
		if free <= 0 {
			r.Problem(component, what, "does not exist and every replication slot is taken",
				"raise max_replication_slots and restart PostgreSQL, or drop an unused slot with SELECT pg_drop_replication_slot('<name>');")
			return nil
		}
		r.OK(component, what, "does not exist yet; cdcd will create it (with an initial snapshot if configured)")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading slot %s: %w", cfg.Slot, err)
	}
	var currentDB string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&currentDB); err != nil {
		return fmt.Errorf("reading current_database: %w", err)
	}
	switch {
	case slotType != "logical" || plugin != "pgoutput":
		r.Problem(component, what, fmt.Sprintf("exists but is a %s slot with plugin %q; cdcd needs a logical slot with pgoutput", slotType, plugin),
			"choose another source.postgres.slot, or drop this slot if nothing else uses it")
	case database != nil && *database != currentDB:
		r.Problem(component, what, fmt.Sprintf("exists but belongs to database %q, not %q", *database, currentDB),
			"choose another source.postgres.slot (slot names are unique per server)")
	case activePID != nil:
		var app, client string
		_ = conn.QueryRow(ctx, `SELECT coalesce(application_name, ''), coalesce(host(client_addr), 'local')
			FROM pg_stat_replication WHERE pid = $1`, *activePID).Scan(&app, &client)
		if strings.HasPrefix(app, applicationName) {
			// A running cdcd: nothing is missing, so this is information, not a problem.
			r.OK(component, what, fmt.Sprintf("in use by %s from %s (walsender pid %d): cdcd is streaming from it", app, client, *activePID))
			break
		}
		r.Problem(component, what, fmt.Sprintf("is in use by another connection (%q from %s, walsender pid %d)", app, client, *activePID),
			"stop the other consumer of this slot, or choose another source.postgres.slot")
	default:
		r.OK(component, what, "exists (pgoutput) and is free; cdcd resumes from it")
	}
	return nil
}

// checkReplicationConnection opens the kind of connection the stream uses; pg_hba.conf may allow
// ordinary connections and still refuse this one.
func checkReplicationConnection(ctx context.Context, cfg CheckConfig, r *preflight.Report) {
	conn, err := ConnectReplication(ctx, cfg.DSN)
	if err != nil {
		fix := "allow it in pg_hba.conf (a logical replication connection matches the database name, not the keyword replication), then reload PostgreSQL"
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			fix = "give the role the REPLICATION attribute (see the replication privilege finding)"
		}
		if tlsFix := tlsFix(err); tlsFix != "" {
			fix = tlsFix
		}
		r.Problem(component, "replication connection", fmt.Sprintf("a replication=database connection is refused: %v", err), fix)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		r.Problem(component, "replication connection", fmt.Sprintf("IDENTIFY_SYSTEM failed: %v", err),
			"check that wal_level is logical and the role has REPLICATION")
		return
	}
	r.OK(component, "replication connection", fmt.Sprintf("system %s, timeline %d, WAL at %s", sys.SystemID, sys.Timeline, sys.XLogPos))
}

// ConnectReplication opens a logical replication connection (replication=database) from an
// ordinary DSN.
func ConnectReplication(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing source.postgres.dsn: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	return pgconn.ConnectConfig(ctx, cfg)
}

func connectFix(err error) string {
	if fix := tlsFix(err); fix != "" {
		return fix
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01":
			return "check the user and password in source.postgres.dsn"
		case "28000":
			return "allow the connection in pg_hba.conf for this role, database and client address, then reload PostgreSQL"
		case "3D000":
			return "create the database or correct its name in source.postgres.dsn"
		}
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return "start PostgreSQL or correct the host and port in source.postgres.dsn"
	}
	return "check source.postgres.dsn and that PostgreSQL is running and reachable"
}

// tlsFix says in plain words why the TLS handshake with PostgreSQL failed and what to change, or
// returns "" when err is not a TLS failure. sslmode and sslrootcert are libpq's names, which
// source.postgres.dsn shares.
func tlsFix(err error) string {
	var wrongHost x509.HostnameError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &wrongHost):
		return fmt.Sprintf("PostgreSQL's certificate is for %s, not for %s, the host cdcd connected to: put one of the certificate's names as the host in source.postgres.dsn (or use sslmode=verify-ca, which checks the CA but not the name)",
			certificateNames(wrongHost.Certificate), wrongHost.Host)
	case errors.As(err, &unknownCA):
		return "PostgreSQL's certificate is not signed by a CA cdcd trusts: set sslrootcert in source.postgres.dsn to the file of the CA that signed it"
	case errors.As(err, &invalid):
		return fmt.Sprintf("PostgreSQL's certificate is not valid (%v): renew it on the server, or trust its CA with sslrootcert in source.postgres.dsn", invalid)
	case strings.Contains(err.Error(), "server refused TLS connection"):
		return "PostgreSQL does not accept TLS connections: turn ssl on in the server's settings, or choose an sslmode in source.postgres.dsn that allows a plain connection"
	}
	return ""
}

// certificateNames lists the host names and addresses a certificate is valid for.
func certificateNames(c *x509.Certificate) string {
	if c == nil {
		return "other names"
	}
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no host name"
	}
	return strings.Join(names, ", ")
}

// redactDSN hides the password of a URL or key=value DSN for messages.
func redactDSN(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "unparseable DSN"
	}
	return fmt.Sprintf("host=%s port=%d user=%s database=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database)
}

// quoteQualified quotes schema.table for SQL shown to the user.
func quoteQualified(name string) string {
	schema, table, _ := strings.Cut(name, ".")
	return pgx.Identifier{schema, table}.Sanitize()
}
