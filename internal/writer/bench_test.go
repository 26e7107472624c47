package writer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kcop"
)

// benchRecords is how many records one iteration of the producer benchmarks writes.
const benchRecords = 200_000

// benchValue is about the size of the JSON envelope of one of cdcd-bench's narrow rows.
var benchValue = make([]byte, 450)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports records per second and CPU per record of an iteration's work.
func reportRate(b *testing.B, start time.Time, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N*benchRecords)/time.Since(start).Seconds(), "records/s")
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/1e3/float64(b.N*benchRecords), "cpu-µs/record")
}

// BenchmarkProduce measures, against the stack's broker, cdcd's writer beside sarama's
// AsyncProducer alone, the client the writer used before its own producer (txnProducer):
//
//   - sarama: a transactional AsyncProducer with the settings parallel mode's producers use
//     (dataConfig) sends records of benchValue's size with a key and cdcd's four ordering headers,
//     committing a Kafka transaction every 10,000 records, as commit groups do under a backlog;
//   - writer: the Writer itself (headers, commit groups, the commit stream, acknowledged ranges, on
//     txnProducer) takes the same records as source transactions of 100 changes.
//
// Run it with `go test -run XXX -bench BenchmarkProduce ./internal/writer/` after `make stack`.
func BenchmarkProduce(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	suffix := strconv.Itoa(rand.IntN(1_000_000))
	admin, err := sarama.NewClusterAdmin(brokers, baseConfig("bench", 10*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	topic := "bench.produce." + suffix
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = admin.DeleteTopic(topic) }()

	b.Run("sarama", func(b *testing.B) {
		p, err := sarama.NewAsyncProducer(brokers, dataConfig(producerConfig("bench", "bench-sarama-"+suffix, 10*time.Second), 1<<20, config.Default().Kafka.Linger))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		acked := make(chan error, 1)
		start, cpu0 := time.Now(), cpuTime(b)
		for b.Loop() {
			go func() {
				var err error
				for range benchRecords {
					select {
					case <-p.Successes():
					case pe := <-p.Errors():
						err = pe.Err
					}
				}
				acked <- err
			}()
			for i := range benchRecords {
				if i%10_000 == 0 {
					if i > 0 {
						if err := p.CommitTxn(); err != nil {
							b.Fatal(err)
						}
					}
					if err := p.BeginTxn(); err != nil {
						b.Fatal(err)
					}
				}
				op := strconv.AppendInt(nil, int64(i%100), 10)
				p.Input() <- &sarama.ProducerMessage{Topic: topic, Partition: 0,
					Key: sarama.ByteEncoder(strconv.AppendInt(nil, int64(i), 10)), Value: sarama.ByteEncoder(benchValue),
					Headers: []sarama.RecordHeader{{Key: headerTxn, Value: []byte("1234567")}, {Key: headerPos, Value: []byte("0/1A2B3C4D")},
						{Key: headerOp, Value: op}, {Key: headerGroup, Value: []byte("42")}}}
			}
			if err := p.CommitTxn(); err != nil {
				b.Fatal(err)
			}
			if err := <-acked; err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start, cpu0)
	})

	b.Run("writer", func(b *testing.B) {
		ctx := context.Background()
		w, err := Open(ctx, Config{Brokers: brokers, ClientID: "bench", TransactionalID: "bench-writer-" + suffix,
			CommitTopic: "bench.produce.commits." + suffix, Source: "bench", Timeout: 10 * time.Second, ReplicationFactor: 1,
			Linger: config.Default().Kafka.Linger})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = admin.DeleteTopic("bench.produce.commits." + suffix) }()
		tbl := &change.Table{Schema: "bench", Name: "rows"}
		txnNo := 0
		start, cpu0 := time.Now(), cpuTime(b)
		for b.Loop() {
			for i := 0; i < benchRecords; i += 100 {
				txnNo++
				txn := &change.Txn{ID: strconv.Itoa(txnNo), Position: fmt.Sprintf("0/%X", txnNo*4096)}
				if err := w.Begin(ctx, txn); err != nil {
					b.Fatal(err)
				}
				for j := range 100 {
					c := &change.Change{Op: change.Insert, Table: tbl, Txn: txn, Index: int64(j)}
					recs := []kcop.Record{{Topic: topic, Partition: 0, Key: strconv.AppendInt(nil, int64(i+j), 10), Value: benchValue}}
					if err := w.Records(ctx, c, recs); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Commit(ctx, &change.Commit{Txn: txn, End: fmt.Sprintf("0/%X", txnNo*4096+8), Changes: 100}, nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Idle(ctx); err != nil { // the last group is committed: every record is acknowledged
				b.Fatal(err)
			}
		}
		reportRate(b, start, cpu0)
		if err := w.Close(ctx, true); err != nil {
			b.Fatal(err)
		}
	})
}
