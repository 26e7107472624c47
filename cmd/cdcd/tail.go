package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/tcc"
)

func newTailCommand(g *globalFlags) *cobra.Command {
	var (
		from     string
		jsonOut  bool
		maxTxns  int
		idleExit time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the source's transactions in source order, with their bookmarks, from the commit stream",
		Long: `tail reads kafka.commit_topic and the data records it names through the tcc, and prints each source
transaction whole, in source order, once, with the bookmark after it. --from takes "beginning", "end"
or a bookmark printed earlier, and continues right after it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			opts := []tcc.Opt{tcc.Brokers(cfg.Kafka.Brokers...), tcc.CommitTopic(cfg.Kafka.CommitTopic), tcc.Security(cfg.Kafka.Security())}
			switch from {
			case "beginning", "":
				opts = append(opts, tcc.FromBeginning())
			case "end":
				opts = append(opts, tcc.FromEnd())
			default:
				b, err := bookmark.ParseConsumer(from)
				if err != nil {
					return fmt.Errorf("--from: %w", err)
				}
				opts = append(opts, tcc.FromBookmark(b))
			}
			ctx := cmd.Context()
			c, err := tcc.NewConsumer(ctx, opts...)
			if err != nil {
				return err
			}
			defer c.Close()
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			txns := 0
			for {
				pctx, cancel := ctx, context.CancelFunc(func() {})
				if idleExit > 0 {
					pctx, cancel = context.WithTimeout(ctx, idleExit)
				}
				f := c.Poll(pctx)
				idle := idleExit > 0 && pctx.Err() == context.DeadlineExceeded
				cancel()
				for _, t := range f.Txns {
					if err := printTxn(w, t, jsonOut); err != nil {
						return err
					}
					if t.Last {
						txns++
					}
					if maxTxns > 0 && txns >= maxTxns {
						return nil
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
				if f.Err != nil {
					if ctx.Err() != nil || idle {
						return nil
					}
					return f.Err
				}
			}
		},
	}
	cmd.Flags().StringVar(&from, "from", "beginning", `where to start: "beginning", "end" or a bookmark`)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per transaction (or chunk of a large one)")
	cmd.Flags().IntVar(&maxTxns, "max-txns", 0, "exit after this many transactions (0: run until stopped)")
	cmd.Flags().DurationVar(&idleExit, "idle-exit", 0, "exit when nothing arrives for this long (0: wait forever)")
	return cmd
}

type jsonOp struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	ID        string          `json:"id"`
	Key       json.RawMessage `json:"key"`
	Value     json.RawMessage `json:"value"`
	Bookmark  string          `json:"bookmark"`
}

type jsonTxn struct {
	ID         string         `json:"id"`
	Position   string         `json:"pos"`
	End        string         `json:"end"`
	CommitTime time.Time      `json:"commit_time,omitzero"`
	Snapshot   bool           `json:"snapshot,omitempty"`
	Copy       *bookmark.Copy `json:"copy,omitempty"`
	Group      uint64         `json:"group"`
	Changes    int64          `json:"changes"`
	Records    int64          `json:"records"`
	First      bool           `json:"first"`
	Last       bool           `json:"last"`
	Ops        []jsonOp       `json:"ops"`
	Bookmark   string         `json:"bookmark"`
}

// raw embeds b as JSON when it is JSON, as a JSON string otherwise, and null when absent.
func raw(b []byte) json.RawMessage {
	if b == nil {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

func printTxn(w io.Writer, t *tcc.Txn, asJSON bool) error {
	if asJSON {
		j := jsonTxn{ID: t.ID, Position: t.Position, End: t.End, CommitTime: t.CommitTime, Snapshot: t.Snapshot, Copy: t.Copy,
			Group: t.Group, Changes: t.Changes, Records: t.Records, First: t.First, Last: t.Last, Bookmark: t.Bookmark.String(),
			Ops: make([]jsonOp, len(t.Ops))}
		for i, op := range t.Ops {
			j.Ops[i] = jsonOp{Topic: op.Topic, Partition: op.Partition, Offset: op.Offset, ID: op.ID(),
				Key: raw(op.Key), Value: raw(op.Value), Bookmark: op.Bookmark().String()}
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	part := ""
	switch {
	case !t.First && !t.Last:
		part = " (continued)"
	case !t.First:
		part = " (end)"
	case !t.Last:
		part = " (begins; more follows)"
	}
	when := ""
	if !t.CommitTime.IsZero() {
		when = " committed " + t.CommitTime.Format(time.RFC3339Nano)
	}
	if c := t.Copy; c != nil {
		when = fmt.Sprintf(" copying %s, chunk %d, %d rows so far", c.Table, c.Chunk, c.Rows)
		if c.Complete {
			when += ", complete"
		}
	}
	if _, err := fmt.Fprintf(w, "txn %s at %s%s%s: %d changes, %d records\n", t.ID, t.Position, when, part, t.Changes, t.Records); err != nil {
		return err
	}
	for _, op := range t.Ops {
		if _, err := fmt.Fprintf(w, "  %s %s/%d@%d key=%s value=%s\n", op.ID(), op.Topic, op.Partition, op.Offset, op.Key, raw(op.Value)); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "  bookmark %s\n", t.Bookmark)
	return err
}
