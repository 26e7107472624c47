package writer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/config"
	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kcop"
)

// bulky is a KCOP writing one JSON-like record of about 600 bytes per change to its topic: values
// that repeat themselves as change events do, so that every codec has something to shrink.
type bulky struct{ topic string }

func bulkyValue(txn string, index int64) string {
	return fmt.Sprintf(`{"before":null,"after":{"id":%d,"name":"name %d","note":%q},"op":"c","source":{"db":"cdcd","schema":"s","table":"t","txId":%q}}`,
		index, index, strings.Repeat("lorem ipsum ", 40), txn)
}

func (b bulky) Process(_ context.Context, c *change.Change, dst []kcop.Record) ([]kcop.Record, error) {
	return append(dst, kcop.Record{Topic: b.topic, Partition: 0, Key: []byte(fmt.Sprint(c.Index)), Value: []byte(bulkyValue(c.Txn.ID, c.Index))}), nil
}

// batchSizes adds up, per codec, the bytes of the record batches a client fetched as they came
// (compressed) and once decompressed.
type batchSizes struct {
	mu                       sync.Mutex
	compressed, uncompressed map[uint8]int
}

func (s *batchSizes) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compressed[m.CompressionType] += m.CompressedBytes
	s.uncompressed[m.CompressionType] += m.UncompressedBytes
}

// readAll reads every committed record of topic, with the sizes of the batches they came in.
func readAll(t *testing.T, brokers []string, topic string, want int) ([]*kgo.Record, *batchSizes) {
	t.Helper()
	sizes := &batchSizes{compressed: map[uint8]int{}, uncompressed: map[uint8]int{}}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.WithHooks(sizes))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(got) < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got, sizes
}

// TestStackCompressedBatches: with kafka.compression set, every batch cdcd writes to the stack's
// broker, data and commit records, in both delivery modes, carries the codec and is smaller than its
// records; franz-go and librdkafka (kcat) read back exactly the records written.
func TestStackCompressedBatches(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	const txns, changes = 20, 50
	for _, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy,
		sarama.CompressionLZ4, sarama.CompressionZSTD} {
		for _, parallel := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/parallel=%v", codec, parallel), func(t *testing.T) {
				suffix := fmt.Sprintf("%s.%v.%06d", codec, parallel, rand.IntN(1_000_000))
				data, commits := "compression.data."+suffix, "compression.commits."+suffix
				createTopics(t, brokers, data)
				w, err := Open(context.Background(), Config{Brokers: brokers, ClientID: "t", TransactionalID: "compression-" + suffix,
					CommitTopic: commits, Source: "src", MaxGroupRecords: 300, MaxGroupDelay: time.Hour, Timeout: 10 * time.Second,
					MaxMessageBytes: 1 << 20, ReplicationFactor: 1, Compression: codec, Parallel: parallel, ParallelProducers: 2})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					admin, err := sarama.NewClusterAdmin(brokers, baseConfig("stack-test", 10*time.Second))
					if err == nil {
						_ = admin.DeleteTopic(commits)
						admin.Close()
					}
				})
				ctx := context.Background()
				tbl := &change.Table{Schema: "s", Name: "t"}
				stage := kcop.NewStage(bulky{data}, w, nil)
				var want []string
				for i := range txns {
					txn := &change.Txn{ID: fmt.Sprint(1000 + i), Position: fmt.Sprintf("0/%X", 16*(i+1))}
					if err := w.Begin(ctx, txn); err != nil {
						t.Fatal(err)
					}
					for j := range int64(changes) {
						if err := stage.Change(ctx, &change.Change{Op: change.Insert, Table: tbl, Txn: txn, Index: j}); err != nil {
							t.Fatal(err)
						}
						want = append(want, bulkyValue(txn.ID, j))
					}
					if err := w.Commit(ctx, &change.Commit{Txn: txn, End: fmt.Sprintf("0/%X", 16*(i+1)+8), Changes: changes}, nil); err != nil {
						t.Fatal(err)
					}
				}
				if err := w.Close(ctx, true); err != nil {
					t.Fatal(err)
				}

				got, sizes := readAll(t, brokers, data, len(want))
				if len(got) != len(want) {
					t.Fatalf("read %d records, want %d", len(got), len(want))
				}
				for i, r := range got {
					if string(r.Value) != want[i] {
						t.Fatalf("record %d: %q, want %q", i, r.Value, want[i])
					}
					if c := r.Attrs.CompressionType(); c != uint8(codec) {
						t.Fatalf("record %d came in a batch compressed with codec %d, want %d (%s)", i, c, codec, codec)
					}
				}
				checkShrunk(t, "data", codec, sizes)

				records, sizes := readAll(t, brokers, commits, 1)
				var committed int64
				for _, r := range records {
					c, err := bookmark.ParseCommitRecord(r.Value)
					if err != nil {
						t.Fatal(err)
					}
					for _, tx := range c.Txns {
						committed += tx.Records
					}
					if got := r.Attrs.CompressionType(); got != uint8(codec) {
						t.Errorf("commit record of group %d: codec %d, want %d", c.Group, got, codec)
					}
				}
				if committed != int64(len(want)) {
					t.Errorf("commit records name %d records, want %d", committed, len(want))
				}
				if codec != sarama.CompressionNone && sizes.compressed[uint8(codec)] >= sizes.uncompressed[uint8(codec)] {
					t.Errorf("commit batches: %d bytes compressed, %d uncompressed", sizes.compressed[uint8(codec)], sizes.uncompressed[uint8(codec)])
				}

				kcat, err := exec.LookPath("kcat")
				if err != nil {
					if testenv.InCI() {
						t.Fatal("kcat is not installed; scripts/stack.sh installs it")
					}
					t.Skip("kcat is not installed; run scripts/stack.sh up kafka")
				}
				out, err := exec.Command(kcat, "-b", strings.Join(brokers, ","), "-C", "-t", data, "-o", "beginning", "-e", "-q",
					"-X", "isolation.level=read_committed", "-f", "%s\n").CombinedOutput()
				if err != nil {
					t.Fatalf("kcat: %v\n%s", err, out)
				}
				if string(out) != strings.Join(want, "\n")+"\n" {
					t.Errorf("kcat read %d bytes, want the %d records written", len(out), len(want))
				}
			})
		}
	}
}

// checkShrunk: with a codec, the batches hold well under half their records' bytes (the values
// repeat themselves); without one, the bytes are the records'.
func checkShrunk(t *testing.T, what string, codec sarama.CompressionCodec, sizes *batchSizes) {
	t.Helper()
	c, u := sizes.compressed[uint8(codec)], sizes.uncompressed[uint8(codec)]
	switch {
	case u == 0:
		t.Errorf("%s: no batch compressed with %s was read", what, codec)
	case codec == sarama.CompressionNone && c != u:
		t.Errorf("%s: %d bytes fetched for %d bytes of records, without compression", what, c, u)
	case codec != sarama.CompressionNone && 2*c >= u:
		t.Errorf("%s: %s batches hold %d bytes for %d bytes of records: not compressed", what, codec, c, u)
	}
	t.Logf("%s: %s, %d bytes for %d bytes of records", what, codec, c, u)
}

// TestCompressionCodecOfEveryConfigName: every name kafka.compression accepts is a codec, the one
// Kafka calls by that name; a name it refuses is refused here too, naming the setting.
func TestCompressionCodecOfEveryConfigName(t *testing.T) {
	for i, name := range config.Compressions {
		codec, err := CompressionCodec(string(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if codec.String() != string(name) || int(codec) != i {
			t.Errorf("%s: codec %s (%d), want Kafka's codec %d of that name", name, codec, codec, i)
		}
	}
	if _, err := CompressionCodec("lz5"); err == nil || !strings.Contains(err.Error(), "kafka.compression") {
		t.Errorf("lz5: %v", err)
	}
}
