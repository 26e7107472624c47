package mysql

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/cdcd-dev/cdcd/internal/preflight"
)

// CheckConfig is what Check needs to know of the capture configuration.
type CheckConfig struct {
	Addr     string
	User     string
	Password string
	// ServerID is the id cdcd will use as a replica.
	ServerID uint32
	// Tables are database-qualified; empty means all tables.
	Tables []string
	// SignalTable is source.mysql.signal_table; "" when not set.
	SignalTable string
}

// Flavor is the server family: "mysql" or "mariadb". They spell GTIDs and some settings differently.
type Flavor string

const (
	FlavorMySQL   Flavor = "mysql"
	FlavorMariaDB Flavor = "mariadb"
)

// Check connects as cdcd would and adds to r a finding for every prerequisite of binlog capture:
// log_bin, binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, GTID mode, the user's
// replication rights, server ids and the configured tables. It never changes the server. It returns an
// error only when ctx ends.
func Check(ctx context.Context, cfg CheckConfig, r *preflight.Report) error {
	conn, err := client.ConnectWithContext(ctx, cfg.Addr, cfg.User, cfg.Password, "", 10*time.Second)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.Problem("mysql", "connection", fmt.Sprintf("cannot connect to %s as %s: %v", cfg.Addr, cfg.User, err), connectFix(err))
		return nil
	}
	defer conn.Close()

	vars, err := variables(conn, "version", "version_comment", "log_bin", "binlog_format", "binlog_row_image",
		"binlog_row_metadata", "server_id", "gtid_mode", "enforce_gtid_consistency", "gtid_strict_mode")
	if err != nil {
		r.Problem("mysql", "query", err.Error(), "check that the server is healthy")
		return nil
	}
	flavor := FlavorMySQL
	if strings.Contains(strings.ToLower(vars["version"]+" "+vars["version_comment"]), "mariadb") {
		flavor = FlavorMariaDB
	}
	comp := string(flavor)
	r.OK(comp, "connection", fmt.Sprintf("connected to %s as %s (%s %s)", cfg.Addr, cfg.User, flavor, vars["version"]))

	want := func(name, value, fix string) {
		got := vars[name]
		if strings.EqualFold(got, value) {
			r.OK(comp, name, got)
			return
		}
		if got == "" {
			got = "not available on this server"
		}
		r.Problem(comp, name, fmt.Sprintf("%s is %s; cdcd needs %s", name, got, value), fix)
	}
	want("log_bin", "ON", "enable the binary log: set log_bin (and a server_id) in the server's configuration and restart it")
	want("binlog_format", "ROW", "set binlog_format=ROW in the server's configuration (SET GLOBAL only affects new sessions) and restart it")
	want("binlog_row_image", "FULL", "set binlog_row_image=FULL in the server's configuration and restart it")
	metadataFix := "set binlog_row_metadata=FULL in the server's configuration and restart it (column names, keys, signedness and enum values come from it)"
	if vars["binlog_row_metadata"] == "" {
		metadataFix = "upgrade to MySQL 8.0.1+ or MariaDB 10.5+ and set binlog_row_metadata=FULL; without it column names and unsigned types are not in the binlog"
	}
	want("binlog_row_metadata", "FULL", metadataFix)

	switch flavor {
	case FlavorMariaDB:
		// MariaDB always writes GTIDs; strict mode guarantees they increase, which ordered positions rely on.
		want("gtid_strict_mode", "ON", "set gtid_strict_mode=ON in the server's configuration and restart it")
	default:
		want("gtid_mode", "ON", "set gtid_mode=ON and enforce_gtid_consistency=ON (step through the OFF_PERMISSIVE/ON_PERMISSIVE modes on a live server)")
		want("enforce_gtid_consistency", "ON", "set enforce_gtid_consistency=ON in the server's configuration")
	}

	serverID, _ := strconv.ParseUint(vars["server_id"], 10, 32)
	switch {
	case serverID == 0:
		r.Problem(comp, "server_id", "the server's server_id is 0, which disables replication", "set a non-zero server_id in the server's configuration and restart it")
	case uint32(serverID) == cfg.ServerID:
		r.Problem(comp, "server_id", fmt.Sprintf("cdcd's source.mysql.server_id %d equals the server's own", cfg.ServerID), "choose another source.mysql.server_id, unique among servers and replicas")
	default:
		r.OK(comp, "server_id", fmt.Sprintf("server %d, cdcd %d", serverID, cfg.ServerID))
	}

	checkGrants(conn, comp, flavor, cfg.User, r)
	checkTables(conn, comp, cfg.Tables, r)
	if cfg.SignalTable != "" {
		checkSignalTable(conn, comp, cfg.SignalTable, cfg.User, r)
	}
	return ctx.Err()
}

func variables(conn *client.Conn, names ...string) (map[string]string, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	res, err := conn.Execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + strings.Join(quoted, ",") + ")")
	if err != nil {
		return nil, fmt.Errorf("reading server variables: %w", err)
	}
	vars := make(map[string]string, len(names))
	for i := range res.RowNumber() {
		name, _ := res.GetString(i, 0)
		value, _ := res.GetString(i, 1)
		vars[strings.ToLower(name)] = value
	}
	return vars, nil
}

// checkGrants reads SHOW GRANTS: reading the binlog needs REPLICATION SLAVE (REPLICATION REPLICA),
// finding the current position needs REPLICATION CLIENT (MariaDB: BINLOG MONITOR), a snapshot needs
// SELECT.
func checkGrants(conn *client.Conn, comp string, flavor Flavor, user string, r *preflight.Report) {
	res, err := conn.Execute("SHOW GRANTS FOR CURRENT_USER()")
	if err != nil {
		r.Problem(comp, "privileges", fmt.Sprintf("SHOW GRANTS failed: %v", err), "check that the server is healthy")
		return
	}
	var global []string
	for i := range res.RowNumber() {
		g, _ := res.GetString(i, 0)
		up := strings.ToUpper(g)
		if strings.Contains(up, " ON *.* ") {
			global = append(global, up)
		}
	}
	has := func(privs ...string) bool {
		for _, g := range global {
			if strings.Contains(g, "ALL PRIVILEGES") {
				return true
			}
			for _, p := range privs {
				if strings.Contains(g, p) {
					return true
				}
			}
		}
		return false
	}
	var missing []string
	if !has("REPLICATION SLAVE", "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	monitor := "REPLICATION CLIENT"
	if flavor == FlavorMariaDB {
		monitor = "BINLOG MONITOR"
	}
	if !has("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER") {
		missing = append(missing, monitor)
	}
	if !has("SELECT") {
		missing = append(missing, "SELECT")
	}
	if len(missing) > 0 {
		r.Problem(comp, "privileges", fmt.Sprintf("user %s lacks %s on *.*", user, strings.Join(missing, ", ")),
			fmt.Sprintf("run GRANT %s ON *.* TO '%s'@'<host>'; as an administrator", strings.Join(missing, ", "), user))
		return
	}
	r.OK(comp, "privileges", "replication and SELECT granted")
}

func checkTables(conn *client.Conn, comp string, tables []string, r *preflight.Report) {
	if len(tables) == 0 {
		r.OK(comp, "tables", "none listed: every table is captured")
		return
	}
	for _, t := range tables {
		db, name, _ := strings.Cut(t, ".")
		res, err := conn.Execute(`SELECT t.TABLE_TYPE,
				(SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS c
				 WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
			FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?`, db, name)
		if err != nil {
			r.Problem(comp, "table "+t, fmt.Sprintf("looking it up failed: %v", err), "check that the user may read information_schema")
			continue
		}
		if res.RowNumber() == 0 {
			r.Problem(comp, "table "+t, "does not exist, or the user may not see it",
				"create it, grant SELECT on it, or correct or remove it in source.mysql.tables")
			continue
		}
		keys, _ := res.GetInt(0, 1)
		if keys == 0 {
			r.Warn(comp, "table "+t, "has no primary key: its records have no key and updates cannot be matched to earlier rows",
				"add a primary key")
			continue
		}
		r.OK(comp, "table "+t, "exists with a primary key")
	}
}

// checkSignalTable checks that the signal table has the columns cdcd writes its watermarks into
// and that the user may write them.
func checkSignalTable(conn *client.Conn, comp, table, user string, r *preflight.Report) {
	db, name, _ := strings.Cut(table, ".")
	create := fmt.Sprintf("CREATE TABLE %s.%s (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)", quoteIdent(db), quoteIdent(name))
	res, err := conn.Execute(`SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, db, name)
	if err != nil {
		r.Problem(comp, "signal_table", fmt.Sprintf("looking up %s failed: %v", table, err), "check that the user may read information_schema")
		return
	}
	cols := map[string]string{}
	for i := range res.RowNumber() {
		c, _ := res.GetString(i, 0)
		k, _ := res.GetString(i, 1)
		cols[strings.ToLower(c)] = k
	}
	switch {
	case len(cols) == 0:
		r.Problem(comp, "signal_table", table+" does not exist, or the user may not see it", "create it: "+create)
		return
	case cols["id"] != "PRI" || !hasKeys(cols, "type", "data"):
		r.Problem(comp, "signal_table", table+" needs the columns id (its primary key), type and data", "create it as "+create)
		return
	}
	grants, err := conn.Execute("SHOW GRANTS FOR CURRENT_USER()")
	if err != nil {
		r.Problem(comp, "signal_table", fmt.Sprintf("SHOW GRANTS failed: %v", err), "check that the server is healthy")
		return
	}
	targets := []string{"*.*", "`" + strings.ToUpper(db) + "`.*", "`" + strings.ToUpper(db) + "`.`" + strings.ToUpper(name) + "`"}
	var insert, update bool
	for i := range grants.RowNumber() {
		g, _ := grants.GetString(i, 0)
		up := strings.ToUpper(g)
		for _, t := range targets {
			if strings.Contains(up, " ON "+t+" ") {
				all := strings.Contains(up, "ALL PRIVILEGES")
				insert = insert || all || strings.Contains(up, "INSERT")
				update = update || all || strings.Contains(up, "UPDATE")
			}
		}
	}
	if !insert || !update {
		r.Problem(comp, "signal_table", fmt.Sprintf("user %s may not write %s: cdcd writes its snapshot watermarks there", user, table),
			fmt.Sprintf("run GRANT INSERT, UPDATE ON %s.%s TO '%s'@'<host>'; as an administrator", quoteIdent(db), quoteIdent(name), user))
		return
	}
	r.OK(comp, "signal_table", table+" has id, type and data, and the user may write it")
}

func hasKeys(m map[string]string, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

func connectFix(err error) string {
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case gomysql.ER_ACCESS_DENIED_ERROR:
			return "check source.mysql.user and source.mysql.password, and that the user may connect from this host"
		}
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return "start the server or correct source.mysql.addr"
	}
	return "check source.mysql.addr, source.mysql.user and source.mysql.password"
}
