package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/internal/writer"
	"github.com/cdcd-dev/cdcd/kcop"
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
	root.AddCommand(newVersionCommand(), newValidateCommand(g), newConfigCommand(g), newRunCommand(g), newTailCommand(g), newStatusCommand(g), newSnapshotCommand(g))
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
		Short: "List every configuration key: its environment variable, type, default and meaning",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "KEY\tENVIRONMENT\tTYPE\tDEFAULT\tMEANING")
			for _, k := range config.Describe() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.Key, k.Env, k.Type, k.Default, k.Doc)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "\nKCOP options (in each kcops entry, beside its type):")
			for _, name := range kcop.Names() {
				for _, o := range kcop.OptionsOf(name) {
					fmt.Fprintf(out, "  %s.%s (%s, default %s): %s\n", name, o.Name, o.Type, o.Default, o.Doc)
				}
			}
			_, err := fmt.Fprintf(out, "\nEvery kcops entry also takes tables: the tables it applies to (schema.table; all when absent),\n"+
				"and a formatter's entry headers: {header key: source}, a source being one of %s.\n", strings.Join(kcop.HeaderSources, ", "))
			return err
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration, each value with where it came from (file, env, flag, default); secrets masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			settings, err := config.Show(g.configPath, g.overrides)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			for _, s := range settings {
				fmt.Fprintf(w, "%s\t%s\t(%s)\n", s.Key, s.Value, s.Source)
			}
			return w.Flush()
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
	src, err := cfg.Source.Settings()
	if err != nil {
		return err
	}
	if k, err := buildKCOP(cfg.KCOPs); err != nil {
		r.Problem("kcops", "chain", err.Error(), "correct the kcops entry; `cdcd config keys` lists every KCOP's options")
	} else {
		r.OK("kcops", "chain", fmt.Sprintf("%d entries build", len(cfg.KCOPs)))
		if c, ok := k.(kcop.Checker); ok {
			if err := c.Check(ctx); err != nil {
				r.Problem("kcops", "services", err.Error(), "start the service the entry names, or correct its address")
			} else {
				r.OK("kcops", "services", "every service a KCOP uses answers")
			}
		}
	}
	if err := src.Check(ctx, r); err != nil {
		return err
	}
	k := cfg.Kafka
	return writer.Check(ctx, writer.CheckConfig{Brokers: k.Brokers, ClientID: k.ClientID, TransactionalID: k.TransactionalID, CommitTopic: k.CommitTopic, Timeout: k.Timeout, Security: k.Security(),
		ReplicationFactor: k.ReplicationFactor, MinInsyncReplicas: k.MinInsyncReplicas, Compression: string(k.Compression)}, r)
}
