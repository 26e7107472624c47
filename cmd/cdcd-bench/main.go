// Command cdcd-bench measures cdcd end to end against the local PostgreSQL and Kafka of
// scripts/stack.sh, and prints the results as Markdown for docs/benchmarks.md:
//
//   - rows/s from a PostgreSQL backlog of N rows in T-row transactions to Kafka (durable: the slot
//     confirmed past the last transaction), and in the same run the raw pglogrepl read rate of the same
//     backlog (receive and parse pgoutput, nothing else) as the ceiling; and cdcd's streaming rate,
//     from its first commit record visible in Kafka to the last, without its start or the slot's
//     confirmation;
//   - cdcd's peak RSS while it carries one transaction of M rows, and the largest anonymous part of
//     it seen (heap, stacks: what cdcd itself holds, without the binary's file pages).
//
// With -source mariadb, the same backlog from the local MariaDB: the raw go-mysql read and decode rate
// beside cdcd end to end.
//
// Usage: go run ./cmd/cdcd-bench [-source postgres|mariadb] [-rows 1000000] [-txn-rows 100] [-big 2000000] [-cdcd bin/cdcd]
package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	pgcapture "github.com/cdcd-dev/cdcd/capture/postgres"
	"github.com/cdcd-dev/cdcd/tcc"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows in the backlog")
	txnRows := flag.Int("txn-rows", 100, "rows per source transaction in the backlog")
	big := flag.Int("big", 2_000_000, "rows in the single large transaction (0: skip)")
	bin := flag.String("cdcd", "bin/cdcd", "the cdcd binary")
	delivery := flag.String("delivery", "transactional", "cdcd's kafka.delivery: transactional or parallel")
	partitions := flag.Int("partitions", 1, "partitions of the data topic")
	source := flag.String("source", "postgres", "the source database: postgres or mariadb")
	format := flag.String("kcop", "json", "the KCOP writing the rows: json, or avro (through $CDCD_STACK_REGISTRY_URL)")
	workers := flag.Int("kcop-workers", 1, "cdcd's kcop_workers")
	compression := flag.String("compression", "", "cdcd's kafka.compression in the PostgreSQL runs: none, gzip, snappy, lz4 or zstd (empty: cdcd's default)")
	brokersFlag := flag.String("brokers", env("CDCD_STACK_KAFKA_BROKERS", "127.0.0.1:19092"),
		"Kafka brokers (e.g. $CDCD_STACK_KAFKA_CLUSTER_BROKERS for the three-node cluster)")
	snapshotRows := flag.Int("snapshot", 0, "instead of the backlog, measure an initial snapshot of a table of this many rows beside COPY TO STDOUT")
	chunkRows := flag.Int("snapshot-chunk-rows", 10_000, "source.postgres.snapshot_chunk_rows for -snapshot")
	parallel := flag.Int("snapshot-parallel", 1, "source.postgres.snapshot_parallel for -snapshot")
	steady := flag.String("steady", "", "instead of the backlog, measure commit → visible latency at these steady rates, rows/s, comma-separated (e.g. 1000,10000)")
	steadyFor := flag.Duration("steady-for", 20*time.Second, "how long each -steady rate runs")
	profile := flag.String("profile", "", "write cdcd's CPU profile of the backlog (cpu.pprof) and its allocations (allocs.pprof) into this directory")
	secure := flag.Bool("secure", false, "cdcd writes to the stack cluster's SASL_SSL listeners (TLS, SCRAM-SHA-512; "+
		"$CDCD_STACK_KAFKA_CLUSTER_*); the bench's own readers keep to -brokers")
	wide := flag.Bool("wide", false, "rows of 20 richly typed columns (integers, numerics, floats, dates, timestamps, interval, uuid, jsonb, arrays) instead of 4")
	tccChild := flag.Int("tcc-read", 0, "(run by cdcd-bench itself) read this many records of bench.rows through the tcc, print the rate and exit")
	binaryMode := flag.String("binary", "auto", "cdcd's source.postgres.binary, and the form the raw read asks for: auto (binary) or off (text)")
	warmup := flag.Int("warmup", 300_000, "rows of each round cdcd writes through the broker before the measured backlog, unmeasured, until the broker's JIT compiler takes at most a tenth of its CPU in a round (at most six rounds; 0: none)")
	reads := flag.Int("reads", 1, "read the backlog this many times with the plain consumer and the tcc, alternating, and report each pair and the median ratio")
	keep := flag.Bool("keep", false, "leave bench.rows and bench.commits in Kafka at the end (for -reads-only)")
	readsOnly := flag.Int("reads-only", 0, "only read this many records of the bench.rows and bench.commits a -keep run left, as -reads says")
	var tr tccReader
	flag.IntVar(&tr.fetchClients, "tcc-fetch-clients", 0, "the tcc's FetchClients (0: its default)")
	flag.IntVar(&tr.maxBuffered, "tcc-max-buffered", 0, "the tcc's MaxBufferedRecords (0: its default)")
	flag.IntVar(&tr.maxBufferedBytes, "tcc-max-buffered-bytes", 0, "the tcc's MaxBufferedBytes (0: its default)")
	flag.Parse()
	tr.brokers = *brokersFlag
	if *readsOnly > 0 {
		compareReads(tr, *readsOnly, *reads, *profile)
		return
	}
	if *tccChild > 0 {
		rate, heap := tr.read(*tccChild, *profile, "-process")
		fmt.Printf("tcc-read %.0f %d\n", rate, heap)
		return
	}
	kcops := "kcops:\n  - type: json\n    topic: \"bench.{table}\"\n"
	switch *format {
	case "json":
	case "avro":
		kcops = fmt.Sprintf("kcops:\n  - type: avro\n    registry_url: %s\n    topic: \"bench.{table}\"\n",
			env("CDCD_STACK_REGISTRY_URL", "http://127.0.0.1:18081/apis/ccompat/v7"))
	default:
		log.Fatalf("-kcop %q is not one of json, avro", *format)
	}
	kcops += fmt.Sprintf("kcop_workers: %d\n", *workers)
	kafkaLines := ""
	if *compression != "" {
		// Only said when set, so that the bench also runs cdcd builds older than the setting.
		kafkaLines = "  compression: " + *compression + "\n"
	}
	if *source == "mariadb" {
		benchMariaDB(*rows, *txnRows, *bin, *brokersFlag)
		return
	}
	dsn := env("CDCD_STACK_PG_DSN", "postgres://cdc:cdc@127.0.0.1:15432/cdcd?sslmode=disable")
	brokers := *brokersFlag
	if *snapshotRows > 0 {
		benchSnapshot(*snapshotRows, *chunkRows, *parallel, *bin, dsn, brokers)
		return
	}
	if *steady != "" {
		fmt.Printf("\n| what | result |\n|---|---|\n")
		for _, r := range strings.Split(*steady, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(r))
			check(err)
			benchSteady(rate, *steadyFor, *bin, dsn, brokers, pgConfig{delivery: *delivery, partitions: *partitions, kcops: kcops, kafka: kafkaLines})
		}
		return
	}
	cdcdBrokers, kafkaDesc := brokers, "plaintext"
	if *secure {
		var security string
		cdcdBrokers, security = clusterSecurity()
		kcops = security + kcops
		kafkaDesc = "TLS + SCRAM-SHA-512"
	}
	ctx := context.Background()

	conn, err := pgx.Connect(ctx, dsn)
	check(err)
	defer conn.Close(ctx)
	resetBench(ctx, conn, brokers, *wide)
	pc := pgConfig{delivery: *delivery, partitions: *partitions, kcops: kcops, kafka: kafkaLines, snapshot: "    snapshot: never\n"}
	if *binaryMode != "auto" {
		// auto is cdcd's default; left unsaid, the bench also runs cdcd builds without the setting.
		pc.snapshot += "    binary: " + *binaryMode + "\n"
	}
	warmRounds := 0
	if *warmup > 0 {
		warmRounds = warmBroker(ctx, conn, *bin, writeConfig(dsn, cdcdBrokers, pc), brokers, *warmup, *txnRows, *wide)
		resetBench(ctx, conn, brokers, *wide)
	}
	// Both slots start before the backlog: cdcd's, and the raw read's.
	for _, slot := range []string{"bench_cdcd", "bench_raw"} {
		_, err = conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
		check(err)
	}

	end := loadBacklog(ctx, conn, 0, *rows, *txnRows, *wide)

	rawCPU0 := selfCPU()
	rawWalsender := newWalsenderCPU("bench_raw")
	rawRate := rawRead(ctx, dsn, *rows, end, *binaryMode == "auto", func() { rawWalsender.sample(ctx, conn) })
	rawCPU := selfCPU() - rawCPU0
	log.Printf("raw pglogrepl read: %.0f rows/s", rawRate)

	if *profile != "" {
		check(os.MkdirAll(*profile, 0o755))
		pc.listen, pc.pprof = freeAddr(), true
	}
	cfg := writeConfig(dsn, cdcdBrokers, pc)
	commits := watchCommits(brokers, int64(*rows))
	broker := localBroker(brokers)
	brokerCPU0, _ := cpuOf(broker)
	brokerJIT0 := jitCPUOf(broker)
	cdcdWalsender := newWalsenderCPU("bench_cdcd")
	took, peak, cpu := runCDCD(ctx, *bin, cfg, conn, end, *profile, pc.listen, cdcdWalsender)
	brokerCPU1, brokerOK := cpuOf(broker)
	brokerJIT := jitCPUOf(broker) - brokerJIT0
	rate := float64(*rows) / took.Seconds()
	streamed := <-commits
	log.Printf("cdcd end to end: %v, %.0f rows/s, peak RSS %v, %v CPU", took.Round(time.Millisecond), rate, peak, cpu.Round(time.Millisecond))

	fmt.Printf("\n| what | result |\n|---|---|\n")
	fmt.Printf("| machine | %d cores (GOMAXPROCS %d), %s |\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02"))
	shape := "narrow rows (4 columns)"
	if *wide {
		shape = "wide rows (20 columns)"
	}
	fmt.Printf("| backlog | %d %s in %d-row transactions (%d transactions); values %s; delivery %s, %d data partition(s); KCOP %s, %d worker(s) |\n",
		*rows, shape, *txnRows, *rows / *txnRows, map[string]string{"auto": "binary", "off": "text"}[*binaryMode], *delivery, *partitions, *format, *workers)
	fmt.Printf("| kafka | %d broker(s), %s; compression %s; warmed with %d rounds of %d rows |\n", brokerCount(brokers), kafkaDesc, cmp.Or(*compression, "cdcd's default"), warmRounds, *warmup)
	fmt.Printf("| raw pglogrepl read (ceiling) | %.0f rows/s |\n", rawRate)
	fmt.Printf("| cdcd end to end (durable in Kafka, slot confirmed) | %.0f rows/s in %v |\n", rate, took.Round(time.Millisecond))
	fmt.Printf("| cdcd streaming (first to last commit record visible in Kafka) | %.0f rows/s; the first commit record %v after cdcd started, the slot confirmed %v after the last |\n",
		streamed.streamingRate(), streamed.first.Sub(streamed.since).Round(time.Millisecond), streamed.since.Add(took).Sub(streamed.last).Round(time.Millisecond))
	fmt.Printf("| ratio cdcd / ceiling | %.2f end to end, %.2f streaming |\n", rate/rawRate, streamed.streamingRate()/rawRate)
	fmt.Printf("| cdcd peak RSS during the backlog | %v |\n", peak)
	perMillion := func(d time.Duration) float64 { return d.Seconds() / float64(*rows) * 1e6 }
	fmt.Printf("| CPU per million rows: raw read / cdcd | %.1f s / %.1f s (%.1f µs / %.1f µs per row) |\n",
		perMillion(rawCPU), perMillion(cpu), perMillion(rawCPU), perMillion(cpu))
	// Both runs fill the machine's cores, so their ratio is the ratio of all the CPU each costs
	// per row, the servers' included: end to end, cdcd also pays the broker.
	rawWS, rawOK := rawWalsender.total()
	cdcdWS, cdcdOK := cdcdWalsender.total()
	if rawOK && cdcdOK {
		brokerText := "the broker not on this machine"
		if broker != 0 && brokerOK {
			brokerText = fmt.Sprintf("broker %.1f (its JIT compiler %.1f)", perMillion(brokerCPU1-brokerCPU0), perMillion(brokerJIT))
		}
		fmt.Printf("| CPU per row, µs, of each run: raw read / cdcd end to end | walsender %.1f + reader %.1f / walsender %.1f + %s + cdcd %.1f |\n",
			perMillion(rawWS), perMillion(rawCPU), perMillion(cdcdWS), brokerText, perMillion(cpu))
	}

	compareReads(tr, *rows, *reads, *profile)

	if *big > 0 {
		log.Printf("one transaction of %d rows", *big)
		_, err = conn.Exec(ctx, fmt.Sprintf(`INSERT INTO bench.rows %s FROM generate_series(%d, %d) g`, rowValues(*wide), *rows+1, *rows+*big))
		check(err)
		end = currentLSN(ctx, conn)
		took, peak, _ = runCDCD(ctx, *bin, cfg, conn, end, "", "", newWalsenderCPU("bench_cdcd"))
		log.Printf("single %d-row transaction: %v, peak RSS %v", *big, took.Round(time.Millisecond), peak)
		fmt.Printf("| one %d-row transaction | %v (%.0f rows/s), cdcd peak RSS %v |\n", *big, took.Round(time.Millisecond), float64(*big)/took.Seconds(), peak)
		rate, heap, rss := tr.process(*rows + *big)
		fmt.Printf("| tcc in a process of its own, the backlog and that transaction | %.0f records/s, Go heap peak %d MiB, peak RSS %v |\n", rate, heap>>20, rss)
	}
	_, _ = conn.Exec(ctx, "SELECT pg_drop_replication_slot('bench_raw')")
	if n := countCommitted(brokers); n != *rows+*big {
		log.Fatalf("bench.rows holds %d committed records, want %d", n, *rows+*big)
	}
	if !*keep {
		deleteTopics(brokers)
	}
}

// loadBacklog inserts rows into bench.rows in transactions of txnRows, their ids following after,
// and returns the LSN after the last.
func loadBacklog(ctx context.Context, conn *pgx.Conn, after, rows, txnRows int, wide bool) bookmark.LSN {
	log.Printf("loading %d rows in %d-row transactions", rows, txnRows)
	t0 := time.Now()
	_, err := conn.Exec(ctx, "SET synchronous_commit = off")
	check(err)
	_, err = conn.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
		FOR i IN 0..%d LOOP
			INSERT INTO bench.rows %s FROM generate_series(%d + i * %d + 1, %d + (i + 1) * %d) g;
			COMMIT;
		END LOOP; END $$`, rows/txnRows-1, rowValues(wide), after, txnRows, after, txnRows))
	check(err)
	end := currentLSN(ctx, conn)
	log.Printf("loaded in %v; backlog ends at %s", time.Since(t0).Round(time.Millisecond), end)
	return end
}

// warmBroker runs cdcd through backlogs of rows, unmeasured, with the measured run's settings,
// and returns how many it ran: a broker started shortly before spends a few µs of CPU per record
// compiling its hot paths (its JIT), which the first runs of a session would otherwise pay. Rounds
// go on until the compiler's share of the broker's CPU in one is small (one round left it at 0.1
// to 0.8 µs per wide row in the measured run, by how many runs the broker had seen), and the
// report gives the compiler's share of the measured run.
func warmBroker(ctx context.Context, conn *pgx.Conn, bin, cfg, brokers string, rows, txnRows int, wide bool) int {
	broker := localBroker(brokers)
	for round := 1; ; round++ {
		_, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('bench_cdcd', 'pgoutput')")
		check(err)
		end := loadBacklog(ctx, conn, 0, rows, txnRows, wide)
		cpu0, jit0 := brokerCPU(broker), jitCPUOf(broker)
		took, _, _ := runCDCD(ctx, bin, cfg, conn, end, "", "", newWalsenderCPU("bench_cdcd"))
		cpu, jit := brokerCPU(broker)-cpu0, jitCPUOf(broker)-jit0
		log.Printf("warmed the broker: %d rows in %v; its CPU %v, of which its JIT compiler %v", rows, took.Round(time.Millisecond), cpu, jit)
		if float64(jit) <= warmJITShare*float64(cpu) || round == maxWarmRounds {
			return round
		}
		resetBench(ctx, conn, brokers, wide)
	}
}

// A broker counts as warm once its JIT compiler takes at most this share of its CPU over a
// warm-up round. It never rests entirely (it recompiles as topics and producers come and go), so
// the rounds are capped.
const (
	warmJITShare  = 0.1
	maxWarmRounds = 6
)

// brokerCPU is cpuOf a local broker, 0 for none.
func brokerCPU(pid int) time.Duration {
	d, _ := cpuOf(pid)
	return d
}

// countCommitted reads every partition of bench.rows to its end with read_committed and counts the
// data records.
func countCommitted(brokers string) int {
	client, err := sarama.NewClient(strings.Split(brokers, ","), sarama.NewConfig())
	check(err)
	defer client.Close()
	parts, err := client.Partitions("bench.rows")
	check(err)
	ends := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	for _, p := range parts {
		end, err := client.GetOffset("bench.rows", p, sarama.OffsetNewest)
		check(err)
		ends[p], offsets[p] = end, kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"bench.rows": offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	check(err)
	defer cl.Close()
	next := map[int32]int64{}
	n := 0
	for {
		behind := false
		for p, end := range ends {
			behind = behind || next[p] < end
		}
		if !behind {
			return n
		}
		fs := cl.PollFetches(context.Background())
		check(fs.Err())
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				n++
			}
		})
	}
}

// clusterSecurity is cdcd's way into the stack cluster's SASL_SSL listeners: the brokers, and the
// kafka.tls and kafka.sasl sections of its configuration (the password in a file), which writeConfig
// places right after the kafka section's last line.
func clusterSecurity() (brokers, section string) {
	brokers = os.Getenv("CDCD_STACK_KAFKA_CLUSTER_SECURE_BROKERS")
	if brokers == "" {
		log.Fatal("-secure needs the stack cluster's settings: eval \"$(scripts/stack.sh env)\" after scripts/stack.sh up kafka-cluster")
	}
	dir, err := os.MkdirTemp("", "cdcd-bench")
	check(err)
	pw := filepath.Join(dir, "kafka-password")
	check(os.WriteFile(pw, []byte(os.Getenv("CDCD_STACK_KAFKA_CLUSTER_PASSWORD")), 0o600))
	return brokers, fmt.Sprintf("  tls:\n    enabled: true\n    ca_file: %q\n  sasl:\n    mechanism: SCRAM-SHA-512\n    user: %q\n    password_file: %q\n",
		os.Getenv("CDCD_STACK_KAFKA_CLUSTER_CA_FILE"), os.Getenv("CDCD_STACK_KAFKA_CLUSTER_USER"), pw)
}

// brokerCount is the number of brokers in the cluster brokers reaches.
func brokerCount(brokers string) int {
	client, err := sarama.NewClient(strings.Split(brokers, ","), sarama.NewConfig())
	check(err)
	defer client.Close()
	return len(client.Brokers())
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func currentLSN(ctx context.Context, conn *pgx.Conn) bookmark.LSN {
	var s string
	check(conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s))
	l, err := bookmark.ParseLSN(s)
	check(err)
	return l
}

// rawRead streams the backlog from the bench_raw slot and parses every pgoutput message, counting
// inserts: the rate at which cdcd could at best receive the same data. sample is called once the
// rows are read, while the replication connection (and its walsender) is still open.
func rawRead(ctx context.Context, dsn string, rows int, end bookmark.LSN, binary bool, sample func()) float64 {
	rc, err := pgcapture.ConnectReplication(ctx, dsn)
	check(err)
	defer rc.Close(ctx)
	args := []string{"proto_version '1'", "publication_names 'bench_pub'"}
	if binary {
		args = append(args, "binary 'true'")
	}
	check(pglogrepl.StartReplication(ctx, rc, "bench_raw", 0, pglogrepl.StartReplicationOptions{PluginArgs: args}))
	var start time.Time
	n := 0
	var last pglogrepl.LSN
	for n < rows {
		msg, err := rc.ReceiveMessage(ctx)
		check(err)
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			check(err)
			if ka.ReplyRequested {
				check(pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: last}))
			}
		case pglogrepl.XLogDataByteID:
			if start.IsZero() {
				start = time.Now()
			}
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			check(err)
			m, err := pglogrepl.Parse(xld.WALData)
			check(err)
			if _, ok := m.(*pglogrepl.InsertMessage); ok {
				n++
			}
			last = xld.WALStart
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	sample()
	return rate
}

// compareReads reads rows records with a plain read_committed consumer and through the tcc, n times
// each, alternating, and reports every pair and the median of the tcc's ratio to the plain rate.
// The readers' CPU is this process's, measured around each: they run one after the other.
func compareReads(tr tccReader, rows, n int, profileDir string) {
	perRecord := func(d time.Duration) float64 { return d.Seconds() / float64(rows) * 1e6 }
	var ratios []float64
	for i := range max(n, 1) {
		cpu0 := selfCPU()
		plain, fetched := plainRead(tr.brokers, rows)
		cpu1 := selfCPU()
		suffix, label := "", ""
		if n > 1 {
			suffix, label = strconv.Itoa(i+1), fmt.Sprintf(" (read %d of %d)", i+1, n)
		}
		through, tccPeak := tr.read(rows, profileDir, suffix)
		cpu2 := selfCPU()
		fmt.Printf("| plain read_committed consumer (franz-go), same records%s | %.0f records/s, %.2f µs CPU per record, %.0f bytes fetched per record |\n",
			label, plain, perRecord(cpu1-cpu0), float64(fetched)/float64(rows))
		fmt.Printf("| tcc, whole transactions in source order%s | %.0f records/s (ratio %.2f), %.2f µs CPU per record, Go heap peak %d MiB |\n",
			label, through, through/plain, perRecord(cpu2-cpu1), tccPeak>>20)
		ratios = append(ratios, through/plain)
	}
	if n > 1 {
		slices.Sort(ratios)
		fmt.Printf("| tcc / plain, median of %d | %.2f |\n", n, ratios[len(ratios)/2])
	}
}

// plainRead counts the data records with a read_committed consumer: the baseline for the tcc. It
// returns their rate, and the bytes of the record batches fetched (as Kafka stores them, compressed
// or not).
func plainRead(brokers string, rows int) (float64, int64) {
	var fetched fetchedBytes
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics("bench.rows"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(&fetched))
	check(err)
	defer cl.Close()
	start := time.Now()
	n := 0
	for n < rows {
		fs := cl.PollFetches(context.Background())
		check(fs.Err())
		n += fs.NumRecords()
	}
	return float64(n) / time.Since(start).Seconds(), fetched.Load()
}

// fetchedBytes adds up the bytes of the record batches a client fetched, before decompression.
type fetchedBytes struct{ atomic.Int64 }

func (f *fetchedBytes) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	f.Add(int64(m.CompressedBytes))
}

// tccReader is how the bench reads through the tcc: the brokers, and the options it was given
// (0 for the tcc's defaults).
type tccReader struct {
	brokers                                     string
	fetchClients, maxBuffered, maxBufferedBytes int
}

func (tr tccReader) options() []tcc.Opt {
	opts := []tcc.Opt{tcc.Brokers(strings.Split(tr.brokers, ",")...), tcc.CommitTopic("bench.commits")}
	if tr.fetchClients > 0 {
		opts = append(opts, tcc.FetchClients(tr.fetchClients))
	}
	if tr.maxBuffered > 0 {
		opts = append(opts, tcc.MaxBufferedRecords(tr.maxBuffered))
	}
	if tr.maxBufferedBytes > 0 {
		opts = append(opts, tcc.MaxBufferedBytes(tr.maxBufferedBytes))
	}
	return opts
}

// process runs the tcc read of n records in a child process (cdcd-bench -tcc-read), so that its
// peak resident set size is the tcc's alone.
func (tr tccReader) process(n int) (rate float64, heap uint64, rss resident) {
	self, err := os.Executable()
	check(err)
	cmd := exec.Command(self, "-tcc-read", strconv.Itoa(n), "-brokers", tr.brokers,
		"-tcc-fetch-clients", strconv.Itoa(tr.fetchClients), "-tcc-max-buffered", strconv.Itoa(tr.maxBuffered),
		"-tcc-max-buffered-bytes", strconv.Itoa(tr.maxBufferedBytes))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	check(cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			check(err)
			_, err = fmt.Sscanf(strings.TrimSpace(out.String()), "tcc-read %f %d", &rate, &heap)
			check(err)
			return rate, heap, rss
		case <-time.After(20 * time.Millisecond):
			rss.observe(cmd.Process.Pid)
		}
	}
}

// read reads the same records through the tcc, and samples the Go heap as it goes.
// With profileDir set it writes the tcc's CPU profile there as tcc-cpu<suffix>.pprof.
func (tr tccReader) read(rows int, profileDir, suffix string) (float64, uint64) {
	ctx := context.Background()
	c, err := tcc.NewConsumer(ctx, tr.options()...)
	check(err)
	defer c.Close()
	if profileDir != "" {
		f, err := os.Create(filepath.Join(profileDir, "tcc-cpu"+suffix+".pprof"))
		check(err)
		check(pprof.StartCPUProfile(f))
		defer func() { pprof.StopCPUProfile(); check(f.Close()) }()
	}
	start := time.Now()
	n := 0
	var peak uint64
	var ms runtime.MemStats
	for n < rows {
		f := c.Poll(ctx)
		check(f.Err)
		for _, t := range f.Txns {
			n += len(t.Ops)
		}
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak+peak/10 && profileDir != "" {
			// What the heap held near its peak.
			check(os.WriteFile(filepath.Join(profileDir, "tcc-heap.pprof"), heapProfile(), 0o644))
		}
		peak = max(peak, ms.HeapInuse)
	}
	return float64(n) / time.Since(start).Seconds(), peak
}

func heapProfile() []byte {
	var b bytes.Buffer
	check(pprof.Lookup("heap").WriteTo(&b, 0))
	return b.Bytes()
}

// pgConfig is what a bench run's cdcd configuration varies in.
type pgConfig struct {
	delivery   string
	partitions int
	kcops      string // the kcops section (with anything to follow the kafka section)
	snapshot   string // the source.postgres lines after the tables, e.g. snapshot: never
	kafka      string // more kafka lines
	listen     string // metrics.listen
	pprof      bool   // metrics.pprof
}

func writeConfig(dsn, brokers string, c pgConfig) string {
	dir, err := os.MkdirTemp("", "cdcd-bench")
	check(err)
	p := filepath.Join(dir, "bench.yaml")
	pprofLine := ""
	if c.pprof {
		// Only said when set, so that the bench also runs cdcd builds older than the setting.
		pprofLine = "  pprof: true\n"
	}
	check(os.WriteFile(p, []byte(fmt.Sprintf(`source:
  kind: postgres
  postgres:
    dsn: %s
    slot: bench_cdcd
    publication: bench_pub
    tables: [bench.rows]
    heartbeat: 100ms
%skafka:
  brokers: [%s]
  transactional_id: cdcd-bench
  commit_topic: bench.commits
  delivery: %s
  topic_partitions: %d
%s%smetrics:
  listen: %q
%slog:
  level: warn
`, dsn, c.snapshot, brokers, c.delivery, c.partitions, c.kafka, c.kcops, c.listen, pprofLine)), 0o600))
	return p
}

// runCDCD runs cdcd until the slot is confirmed at end, and returns how long that took, cdcd's peak
// resident set size and the CPU time it used. With profileDir set (and cdcd serving its profiler on
// addr), it writes cdcd's CPU profile of the run and its allocations there. ws follows the CPU
// of cdcd's walsender meanwhile.
func runCDCD(ctx context.Context, bin, cfg string, conn *pgx.Conn, end bookmark.LSN, profileDir, addr string, ws *walsenderCPU) (time.Duration, resident, time.Duration) {
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	check(cmd.Start())
	profiled := make(chan struct{})
	if profileDir != "" {
		go func() {
			defer close(profiled)
			// Five seconds of the steady run, from its second second (a million-row backlog takes
			// seven to twenty).
			time.Sleep(time.Second)
			fetchTo(filepath.Join(profileDir, "cpu.pprof"), "http://"+addr+"/debug/pprof/profile?seconds=5", 20)
		}()
	} else {
		close(profiled)
	}
	var mem resident
	for {
		mem.observe(cmd.Process.Pid)
		ws.sample(ctx, conn)
		var s *string
		check(conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'bench_cdcd'").Scan(&s))
		if s != nil {
			if l, _ := bookmark.ParseLSN(*s); l >= end {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	mem.observe(cmd.Process.Pid)
	if profileDir != "" {
		fetchTo(filepath.Join(profileDir, "allocs.pprof"), "http://"+addr+"/debug/pprof/allocs", 1)
	}
	check(cmd.Process.Signal(os.Interrupt))
	_ = cmd.Wait()
	<-profiled
	return took, mem, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// fetchTo saves what url answers into path, trying up to tries times a second apart (cdcd may not
// listen yet).
func fetchTo(path, url string, tries int) {
	for i := range tries {
		resp, err := http.Get(url)
		if err == nil {
			f, ferr := os.Create(path)
			check(ferr)
			_, _ = io.Copy(f, resp.Body)
			resp.Body.Close()
			check(f.Close())
			return
		}
		if i < tries-1 {
			time.Sleep(time.Second)
		}
	}
	log.Printf("could not fetch %s", url)
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	return ln.Addr().String()
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resident is what a process held in memory: its peak resident set size (VmHWM), and the largest
// anonymous part of it (RssAnon: heap, stacks, runtime) that observe saw. The rest is mostly the
// binary's file pages, which vary by how its file sits in the page cache: a copy of the same
// binary has been seen to map 10 MiB fewer than the file the linker wrote.
type resident struct {
	peak, anon int64
}

// observe reads the process's figures from /proc.
func (r *resident) observe(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	kib := func(rest string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		return n << 10
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			r.peak = max(r.peak, kib(rest))
		} else if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			r.anon = max(r.anon, kib(rest))
		}
	}
}

func (r resident) String() string {
	return fmt.Sprintf("%d MiB (anonymous %d MiB)", r.peak>>20, r.anon>>20)
}

func deleteTopics(brokers string) {
	admin, err := sarama.NewClusterAdmin(strings.Split(brokers, ","), sarama.NewConfig())
	if err != nil {
		return
	}
	defer admin.Close()
	for _, t := range []string{"bench.commits", "bench.rows"} {
		_ = admin.DeleteTopic(t)
	}
	time.Sleep(time.Second)
}
