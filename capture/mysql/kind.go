package mysql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/internal/preflight"
)

func init() {
	newConfig := func() capture.Config { c := DefaultConfig(); return &c }
	// One reader serves both flavours; it tells them apart by the server's version.
	capture.Register("mysql", capture.Kind{Section: "mysql", NewConfig: newConfig})
	capture.Register("mariadb", capture.Kind{Section: "mysql", NewConfig: newConfig})
}

// Config is the mysql and mariadb kinds' settings (source.mysql.*).
type Config struct {
	Addr     string `mapstructure:"addr" doc:"host:port of MySQL or MariaDB"`
	User     string `mapstructure:"user" doc:"the replication user"`
	Password string `mapstructure:"password" doc:"the replication user's password"`
	// ServerID identifies cdcd to the server as a replica; it must differ from every server's and
	// replica's server_id in the topology.
	ServerID uint32 `mapstructure:"server_id" doc:"cdcd's server_id as a replica; unique in the topology"`
	// Tables lists database-qualified tables to capture; empty means all.
	Tables []string `mapstructure:"tables" doc:"database-qualified tables to capture; empty: all"`
}

// DefaultConfig is the settings when nothing is set.
func DefaultConfig() Config { return Config{ServerID: 4021} }

var _ capture.Config = (*Config)(nil)

// Validate implements capture.Config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("source.mysql.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Addr == "" {
		bad("addr", "is empty; set it to host:port, e.g. 127.0.0.1:3306")
	}
	if c.User == "" {
		bad("user", "is empty; name a user with REPLICATION SLAVE and REPLICATION CLIENT")
	}
	if c.ServerID == 0 {
		bad("server_id", "must be a non-zero id unique among the servers and replicas")
	}
	for _, t := range c.Tables {
		if s, n, ok := strings.Cut(t, "."); !ok || s == "" || n == "" {
			bad("tables", "%q is not database-qualified; write it as database.table", t)
		}
	}
	return errors.Join(errs...)
}

// Check implements capture.Config with the package's Check.
func (c *Config) Check(ctx context.Context, r *preflight.Report) error {
	return Check(ctx, CheckConfig{Addr: c.Addr, User: c.User, Password: c.Password, ServerID: c.ServerID, Tables: c.Tables}, r)
}

// Open implements capture.Config.
func (c *Config) Open(ctx context.Context, log *slog.Logger) (capture.Source, error) {
	return nil, fault.Terminal("source.kind mysql/mariadb: binlog capture is not implemented yet")
}
