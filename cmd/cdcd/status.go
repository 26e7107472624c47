package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdcd-dev/cdcd/internal/metrics"
)

func newStatusCommand(g *globalFlags) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what a running cdcd is doing: whether it streams, and its snapshot's progress table by table",
		Long: `status asks the cdcd that runs with this configuration, at metrics.listen, whether it streams
(/healthz) and how far its snapshot got (/snapshot): rows and bytes copied per table, the rows the
catalog expects, the rate and the time left.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := metricsBase(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			return showStatus(ctx, cmd.OutOrStdout(), base, jsonOut)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the answers as one JSON object")
	return cmd
}

// metricsBase is the URL of the running cdcd's metrics endpoint, from metrics.listen.
func metricsBase(g *globalFlags) (string, error) {
	cfg, err := g.load()
	if err != nil {
		return "", err
	}
	if cfg.Metrics.Listen == "" {
		return "", errors.New("metrics.listen is empty, so a running cdcd answers no questions and takes no requests; set it (e.g. 127.0.0.1:9187) and restart cdcd")
	}
	return "http://" + cfg.Metrics.Listen, nil
}

// showStatus prints whether the cdcd at base streams and its snapshot's progress.
func showStatus(ctx context.Context, w io.Writer, base string, jsonOut bool) error {
	health, err := get(ctx, base+"/healthz")
	if err != nil {
		return fmt.Errorf("no cdcd answers at %s (metrics.listen): %w; is it running with this configuration?", base, err)
	}
	body, err := get(ctx, base+"/snapshot")
	if err != nil {
		return fmt.Errorf("asking %s/snapshot: %w", base, err)
	}
	if jsonOut {
		_, err := fmt.Fprintf(w, "{\"health\":%q,\"snapshot\":%s}\n", health, body)
		return err
	}
	var tables []metrics.TableStatus
	if err := json.Unmarshal(body, &tables); err != nil {
		return fmt.Errorf("%s/snapshot answered something else than progress: %w", base, err)
	}
	return printStatus(w, string(health), tables)
}

// get returns the body of a GET; a 503 of /healthz is an answer, not an error.
func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, nil
}

func printStatus(w io.Writer, health string, tables []metrics.TableStatus) error {
	if _, err := fmt.Fprintf(w, "health: %s", health); err != nil {
		return err
	}
	if len(tables) == 0 {
		_, err := fmt.Fprintln(w, "snapshot: none running")
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "table\tstate\trows\testimated\t%\tMB\tchunks\trows/s\tleft\t")
	for _, t := range tables {
		estimate, pct, left := "?", "?", "?"
		if t.Estimate >= 0 {
			estimate = fmt.Sprint(t.Estimate)
			if t.Estimate > 0 {
				pct = fmt.Sprintf("%.1f", min(100, 100*float64(t.Rows)/float64(t.Estimate)))
			}
		}
		if t.State == "done" {
			pct = "100.0"
		}
		if t.ETASeconds >= 0 {
			left = (time.Duration(t.ETASeconds) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%.1f\t%d\t%.0f\t%s\t\n", t.Table, t.State, t.Rows, estimate, pct, float64(t.Bytes)/(1<<20), t.Chunks, t.RowsPerSecond, left)
	}
	return tw.Flush()
}

func newSnapshotCommand(g *globalFlags) *cobra.Command {
	var pause, resume, cancel, status bool
	cmd := &cobra.Command{
		Use:   "snapshot [TABLE...]",
		Short: "Copy tables (schema.table) again while cdcd streams, or pause, resume or cancel the copy",
		Long: `snapshot asks the cdcd that runs with this configuration (at metrics.listen) to copy the named
tables in chunks while it keeps streaming: each chunk is a snapshot transaction of its own, placed in
the stream so that the copy and the changes around it give exactly the table. The tables must be in
the publication. --pause stops reading new chunks, --resume continues, --cancel drops the named
tables (or all) from the queue; --status prints the progress, as cdcd status does.`,
		RunE: func(cmd *cobra.Command, tables []string) error {
			base, err := metricsBase(g)
			if err != nil {
				return err
			}
			call := metrics.SnapshotCall{Action: "start", Tables: tables}
			n := 0
			for flag, action := range map[*bool]string{&pause: "pause", &resume: "resume", &cancel: "cancel", &status: "status"} {
				if *flag {
					call.Action = action
					n++
				}
			}
			switch {
			case n > 1:
				return errors.New("give at most one of --pause, --resume, --cancel and --status")
			case call.Action == "start" && len(tables) == 0:
				return errors.New("name the tables to copy, as schema.table")
			case (call.Action == "pause" || call.Action == "resume" || call.Action == "status") && len(tables) > 0:
				return fmt.Errorf("--%s takes no tables", call.Action)
			}
			ctx, stop := context.WithTimeout(cmd.Context(), 40*time.Second)
			defer stop()
			if call.Action == "status" {
				return showStatus(ctx, cmd.OutOrStdout(), base, false)
			}
			body, _ := json.Marshal(call)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/snapshot", bytes.NewReader(body))
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("no cdcd answers at %s (metrics.listen): %w; is it running with this configuration?", base, err)
			}
			defer resp.Body.Close()
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("cdcd refused: %s", strings.TrimSpace(string(answer)))
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s", call.Action, answer)
			return err
		},
	}
	cmd.Flags().BoolVar(&pause, "pause", false, "stop reading new chunks")
	cmd.Flags().BoolVar(&resume, "resume", false, "continue a paused snapshot")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "drop the named tables (none named: all) from the snapshot")
	cmd.Flags().BoolVar(&status, "status", false, "print the snapshot's progress")
	return cmd
}
