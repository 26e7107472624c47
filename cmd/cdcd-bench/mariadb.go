package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// benchMariaDB measures a MariaDB binlog backlog of rows in txnRows-row transactions: the raw
// go-mysql read and decode rate (the ceiling), and cdcd end to end until the commit stream vouches
// for the backlog's last transaction.
func benchMariaDB(rows, txnRows int, bin, brokers string) {
	addr := env("CDCD_STACK_MYSQL_ADDR", "127.0.0.1:13306")
	user, password := env("CDCD_STACK_MYSQL_USER", "cdc"), env("CDCD_STACK_MYSQL_PASSWORD", "cdc")
	db := env("CDCD_STACK_MYSQL_DB", "cdcd")
	conn, err := client.Connect(addr, user, password, db)
	check(err)
	defer conn.Close()
	for _, q := range []string{"DROP TABLE IF EXISTS bench_rows",
		"CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, payload VARCHAR(64) NOT NULL, amount DECIMAL(12,2) NOT NULL, at TIMESTAMP(6) NOT NULL)"} {
		_, err := conn.Execute(q)
		check(err)
	}
	deleteTopics(brokers)
	cfg := writeMariaDBConfig(addr, user, password, db, brokers)

	// A first row, copied by the initial snapshot, makes the commit stream hold a position before
	// the backlog.
	_, err = conn.Execute("INSERT INTO bench_rows VALUES (0, 'start', 0, NOW(6))")
	check(err)
	startGTID := gtidPos(conn)
	took, _ := runCDCDUntil(bin, cfg, brokers, startGTID)
	log.Printf("commit stream started at %s (%v)", startGTID, took.Round(time.Millisecond))

	log.Printf("loading %d rows in %d-row transactions", rows, txnRows)
	t0 := time.Now()
	var wg sync.WaitGroup
	const loaders = 4
	for w := range loaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Connect(addr, user, password, db)
			check(err)
			defer c.Close()
			for i := w; i < rows/txnRows; i += loaders {
				_, err := c.Execute(fmt.Sprintf(`INSERT INTO bench_rows SELECT seq, CONCAT(MD5(seq), MD5(seq + 1)), (seq %% 100000) / 100.0, NOW(6)
					FROM seq_%d_to_%d`, i*txnRows+1, (i+1)*txnRows))
				check(err)
			}
		}()
	}
	wg.Wait()
	endGTID := gtidPos(conn)
	log.Printf("loaded in %v; backlog ends at %s", time.Since(t0).Round(time.Millisecond), endGTID)

	rawRate := rawBinlogRead(addr, user, password, startGTID, rows)
	log.Printf("raw go-mysql read and decode: %.0f rows/s", rawRate)

	took, peak := runCDCDUntil(bin, cfg, brokers, endGTID)
	rate := float64(rows) / took.Seconds()
	log.Printf("cdcd end to end: %v, %.0f rows/s, peak RSS %v", took.Round(time.Millisecond), rate, peak)

	fmt.Printf("\n| what (MariaDB) | result |\n|---|---|\n")
	fmt.Printf("| machine | %d cores (GOMAXPROCS %d), %s |\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("| backlog | %d rows in %d-row transactions (%d transactions), ROW binlog with full metadata |\n", rows, txnRows, rows/txnRows)
	fmt.Printf("| raw go-mysql read and decode (ceiling) | %.0f rows/s |\n", rawRate)
	fmt.Printf("| cdcd end to end (durable in Kafka, in the commit stream) | %.0f rows/s in %v |\n", rate, took.Round(time.Millisecond))
	fmt.Printf("| ratio cdcd / ceiling | %.2f |\n", rate/rawRate)
	fmt.Printf("| cdcd peak RSS during the backlog | %v |\n", peak)
	if n := countCommitted(brokers); n != rows+1 {
		log.Fatalf("bench.bench_rows holds %d committed records, want %d", n, rows+1)
	}
	_, _ = conn.Execute("DROP TABLE IF EXISTS bench_rows")
	deleteTopics(brokers)
}

func gtidPos(conn *client.Conn) string {
	res, err := conn.Execute("SELECT @@gtid_binlog_pos")
	check(err)
	s, _ := res.GetString(0, 0)
	return s
}

// rawBinlogRead streams the binlog from gtid with go-mysql and decodes every rows event of
// bench_rows, counting rows: the rate at which cdcd could at best read the same backlog.
func rawBinlogRead(addr, user, password, gtid string, rows int) float64 {
	host, portText, err := net.SplitHostPort(addr)
	check(err)
	port, err := strconv.Atoi(portText)
	check(err)
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: 4099, Flavor: gomysql.MariaDBFlavor,
		Host: host, Port: uint16(port), User: user, Password: password, UseDecimal: true})
	defer syncer.Close()
	set, err := gomysql.ParseMariadbGTIDSet(gtid)
	check(err)
	s, err := syncer.StartSyncGTID(set)
	check(err)
	var start time.Time
	n := 0
	for n < rows {
		ev, err := s.GetEvent(context.Background())
		check(err)
		if start.IsZero() {
			start = time.Now()
		}
		if re, ok := ev.Event.(*replication.RowsEvent); ok && strings.HasSuffix(string(re.Table.Table), "bench_rows") {
			n += len(re.Rows)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

func writeMariaDBConfig(addr, user, password, db, brokers string) string {
	dir, err := os.MkdirTemp("", "cdcd-bench")
	check(err)
	p := filepath.Join(dir, "bench-mariadb.yaml")
	check(os.WriteFile(p, []byte(fmt.Sprintf(`source:
  kind: mariadb
  mysql:
    addr: %s
    user: %s
    password: %s
    server_id: 4098
    tables: [%s.bench_rows]
    snapshot: initial
kafka:
  brokers: [%s]
  transactional_id: cdcd-bench-mariadb
  commit_topic: bench.commits
kcops:
  - type: json
    topic: "bench.rows"
metrics:
  listen: ""
log:
  level: warn
`, addr, user, password, db, brokers)), 0o600))
	return p
}

// runCDCDUntil runs cdcd until the commit stream's last record resumes at the MariaDB GTID position
// gtid, and returns how long that took and cdcd's peak resident set size.
func runCDCDUntil(bin, cfg, brokers, gtid string) (time.Duration, resident) {
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	check(cmd.Start())
	var peak resident
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !commitStreamAt(brokers, gtid) {
		peak.observe(cmd.Process.Pid)
		select {
		case err := <-exited:
			log.Fatalf("cdcd exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	took := time.Since(start)
	peak.observe(cmd.Process.Pid)
	check(cmd.Process.Signal(os.Interrupt))
	<-exited
	return took, peak
}

// commitStreamAt reports whether the last committed commit record resumes at the GTID position gtid.
func commitStreamAt(brokers, gtid string) bool {
	sconf := sarama.NewConfig()
	sconf.Metadata.AllowAutoTopicCreation = false // cdcd creates the commit topic with its own settings
	sc, err := sarama.NewClient(strings.Split(brokers, ","), sconf)
	if err != nil {
		return false
	}
	end, err := sc.GetOffset("bench.commits", 0, sarama.OffsetNewest)
	sc.Close()
	if err != nil || end == 0 {
		return false
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"bench.commits": {0: kgo.NewOffset().At(max(end-4, 0))}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return false
	}
	defer cl.Close()
	var last []byte
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for next := max(end-4, 0); next < end; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return false
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if !r.Attrs.IsControl() {
				last = r.Value
			}
		})
	}
	if last == nil {
		return false
	}
	rec, err := bookmark.ParseCommitRecord(last)
	return err == nil && strings.HasPrefix(rec.Resume, gtid+";")
}
