package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	mycapture "github.com/cdcd-dev/cdcd/capture/mysql"
	pgcapture "github.com/cdcd-dev/cdcd/capture/postgres"
	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/internal/writer"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the module's.
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return v
}

type globalFlags struct {
	configPath string
	overrides  []string
}

func (g *globalFlags) load() (config.Config, error) {
	return config.Load(g.configPath, g.overrides)
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "cdcd",
		Short: "Change data capture from PostgreSQL and MySQL/MariaDB into Kafka, exactly once, in transaction order",
		Long: `cdcd reads committed transactions from a database's own log and writes them to Kafka.

Configuration comes from a YAML file (-c), then CDCD_* environment variables (CDCD_SOURCE_POSTGRES_DSN
for source.postgres.dsn), then --set key=value flags. Unknown keys are errors.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", "", "configuration file (YAML)")
	root.PersistentFlags().StringArrayVar(&g.overrides, "set", nil, "override a configuration key, e.g. --set kafka.brokers=127.0.0.1:9092 (repeatable)")
	root.AddCommand(newVersionCommand(), newValidateCommand(g), newConfigCommand(g), newRunCommand(g), newTailCommand(g))
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print cdcd's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "cdcd", versionString())
			return err
		},
	}
}

func newConfigCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "keys",
		Short: "List every configuration key with its environment variable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, k := range config.Keys() {
				env := "CDCD_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%-32s %s\n", k, env); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return cmd
}

func newValidateCommand(g *globalFlags) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration, the source database and Kafka; report every missing prerequisite with its fix",
		Long: `validate connects to the configured source database and to Kafka as cdcd would, changes nothing,
and prints one line per prerequisite: ok, warning or problem, each problem with its fix.
It exits 0 when nothing is missing, 1 when something is, 2 when the configuration itself is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var r preflight.Report
			if err := runChecks(ctx, cfg, &r); err != nil {
				return fmt.Errorf("validate did not finish: %w", err)
			}
			if _, err := r.WriteTo(cmd.OutOrStdout()); err != nil {
				return err
			}
			if n := r.Problems(); n > 0 {
				return exitError{code: 1, msg: fmt.Sprintf("%d problem(s)", n)}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), "all prerequisites hold")
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	return cmd
}

func runChecks(ctx context.Context, cfg config.Config, r *preflight.Report) error {
	switch cfg.Source.Kind {
	case "postgres":
		p := cfg.Source.Postgres
		if err := pgcapture.Check(ctx, pgcapture.CheckConfig{DSN: p.DSN, Slot: p.Slot, Publication: p.Publication, Tables: p.Tables}, r); err != nil {
			return err
		}
	case "mysql", "mariadb":
		m := cfg.Source.MySQL
		if err := mycapture.Check(ctx, mycapture.CheckConfig{Addr: m.Addr, User: m.User, Password: m.Password, ServerID: m.ServerID, Tables: m.Tables}, r); err != nil {
			return err
		}
	}
	k := cfg.Kafka
	return writer.Check(ctx, writer.CheckConfig{Brokers: k.Brokers, ClientID: k.ClientID, TransactionalID: k.TransactionalID, CommitTopic: k.CommitTopic, Timeout: k.Timeout}, r)
}
