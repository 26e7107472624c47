package writer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

func TestMurmur2PartitionIsTheJavaClients(t *testing.T) {
	// sarama's murmur2 partitioner is written to agree with the Java client's.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 10_000 {
		key := make([]byte, rng.IntN(40))
		for j := range key {
			key[j] = byte(rng.Uint32())
		}
		n := int32(1 + rng.IntN(64))
		want, err := sarama.NewMurmur2Partitioner("t").Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
		if err != nil {
			t.Fatal(err)
		}
		if got := murmur2Partition(key, n); got != want {
			t.Fatalf("key %x (%d) among %d partitions: %d, sarama says %d", key, i, n, got, want)
		}
	}
}

// ackLog collects a producer's acknowledgements.
type ackLog struct {
	mu    sync.Mutex
	spans map[topicPartition][][2]int64 // first and last offset of each batch
	count int
	err   error
}

func (a *ackLog) acked(topic string, partition int32, first int64, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.spans == nil {
		a.spans = map[topicPartition][][2]int64{}
	}
	tp := topicPartition{topic, partition}
	a.spans[tp] = append(a.spans[tp], [2]int64{first, first + int64(n) - 1})
	a.count += n
}

func (a *ackLog) failed(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.err = err
}

func (a *ackLog) covers(tp topicPartition, offset int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.spans[tp] {
		if offset >= s[0] && offset <= s[1] {
			return true
		}
	}
	return false
}

// newFakeProducer is a transactional producer against the in-process broker c, closed with the
// test.
func newFakeProducer(t *testing.T, c *kfake.Cluster, id string, maxBatch int, linger time.Duration, acks *ackLog) *txnProducer {
	t.Helper()
	client, err := sarama.NewClient(c.ListenAddrs(), baseConfig("txnproducer-test", 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	p, err := newTxnProducer(client, id, time.Minute, 5*time.Second, maxBatch, linger, acks.acked, acks.failed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func newStackProducer(t *testing.T, brokers []string, id string, linger time.Duration, acks *ackLog) (*txnProducer, sarama.Client) {
	t.Helper()
	client, err := sarama.NewClient(brokers, baseConfig("txnproducer-test", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// Batches of 4 KiB and at most 16 KiB buffered: many batches per partition, several queued
	// behind a request in flight, and senders that make Send wait.
	p, err := newTxnProducer(client, id, time.Minute, 10*time.Second, 4096, linger, acks.acked, acks.failed)
	if err != nil {
		t.Fatal(err)
	}
	p.maxBuffered = 16 << 10
	t.Cleanup(func() {
		if p.InTxn() { // a failed test leaves no transaction to hold read_committed consumers back
			_ = p.AbortTxn()
		}
		p.Close()
	})
	return p, client
}

// TestTxnProducerOnTheStack: records sent across the partitions of two topics in three Kafka
// transactions (committed, aborted, committed) are what a read_committed consumer we did not write
// (franz-go, and librdkafka through kcat) reads: the committed ones only, each partition's in the
// order they were sent, with their keys and headers, at offsets the acknowledgements named.
func TestTxnProducerOnTheStack(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	suffix := fmt.Sprintf("%06d", rand.IntN(1_000_000))
	topics := []string{"txnproducer.a." + suffix, "txnproducer.b." + suffix}
	createPartitionedTopic(t, brokers, topics[0], 3)
	createPartitionedTopic(t, brokers, topics[1], 1)
	for _, linger := range []time.Duration{0, 3 * time.Millisecond} {
		t.Run(fmt.Sprint("linger ", linger), func(t *testing.T) {
			acks := &ackLog{}
			p, _ := newStackProducer(t, brokers, "txnproducer-"+suffix+linger.String(), linger, acks)
			want := map[topicPartition][]string{}
			sent := 0
			send := func(txn string, n int, commit bool) {
				t.Helper()
				if err := p.BeginTxn(); err != nil {
					t.Fatal(err)
				}
				for i := range n {
					value := fmt.Sprintf("%s-%s-%05d-%s", linger, txn, i, strings.Repeat("x", i%300))
					tp := topicPartition{topics[i%2], int32(i % 3)}
					if i%2 == 1 {
						tp.partition = 0
					}
					r := &producedRecord{rec: sarama.Record{Key: []byte(txn), Value: []byte(value)}}
					r.headers[0] = sarama.RecordHeader{Key: []byte("h"), Value: []byte(txn)}
					r.setHeaders(r.headers[:1])
					if err := p.Send(tp, r); err != nil {
						t.Fatal(err)
					}
					sent++
					if commit {
						want[tp] = append(want[tp], value)
					}
				}
				var err error
				if commit {
					err = p.CommitTxn()
				} else {
					p.Flush()
					err = p.AbortTxn()
				}
				if err != nil {
					t.Fatalf("ending %s: %v", txn, err)
				}
			}
			send("first", 5000, true)
			send("aborted", 1000, false)
			send("last", 3000, true)
			if acks.err != nil || acks.count < 8000 {
				t.Fatalf("%d of %d records acknowledged, failure %v", acks.count, sent, acks.err)
			}

			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			got := map[topicPartition][]string{}
			n := 0
			deadline := time.Now().Add(30 * time.Second)
			for n < 8000 && time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				fs := cl.PollFetches(ctx)
				cancel()
				fs.EachRecord(func(r *kgo.Record) {
					v := string(r.Value)
					if !strings.HasPrefix(v, linger.String()+"-") {
						return // the other subtest's
					}
					tp := topicPartition{r.Topic, r.Partition}
					got[tp] = append(got[tp], v)
					n++
					txn := strings.SplitN(v, "-", 3)[1]
					if string(r.Key) != txn || len(r.Headers) != 1 || r.Headers[0].Key != "h" || string(r.Headers[0].Value) != txn {
						t.Errorf("%s: key %q, headers %v", v, r.Key, r.Headers)
					}
					if !acks.covers(tp, r.Offset) {
						t.Errorf("%s at %s/%d offset %d: no acknowledgement named that offset", v, r.Topic, r.Partition, r.Offset)
					}
				})
			}
			for tp, w := range want {
				g := got[tp]
				if len(g) != len(w) {
					t.Errorf("%s/%d: read %d records, want %d", tp.topic, tp.partition, len(g), len(w))
					continue
				}
				for i := range w {
					if g[i] != w[i] {
						t.Errorf("%s/%d record %d: %q, want %q", tp.topic, tp.partition, i, g[i], w[i])
						break
					}
				}
			}

			kcat, err := exec.LookPath("kcat")
			if err != nil {
				if testenv.InCI() {
					t.Fatal("kcat is not installed; scripts/stack.sh installs it")
				}
				t.Skip("kcat is not installed; run scripts/stack.sh up kafka")
			}
			out, err := exec.Command(kcat, "-b", strings.Join(brokers, ","), "-C", "-t", topics[1], "-o", "beginning", "-e", "-q",
				"-X", "isolation.level=read_committed", "-f", "%s\n").CombinedOutput()
			if err != nil {
				t.Fatalf("kcat: %v\n%s", err, out)
			}
			var mine []string
			for _, v := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
				if strings.HasPrefix(v, linger.String()+"-") {
					mine = append(mine, v)
				}
			}
			if w := want[topicPartition{topics[1], 0}]; strings.Join(mine, "\n") != strings.Join(w, "\n") {
				t.Errorf("kcat read_committed on %s: %d records, want %d", topics[1], len(mine), len(w))
			}
		})
	}
}

// TestTxnProducerFenced: a second producer with the same transactional id fences the first, whose
// open transaction fails and is never committed, with an error the writer calls fencing.
func TestTxnProducerFenced(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	suffix := fmt.Sprintf("%06d", rand.IntN(1_000_000))
	topic := "txnproducer.fenced." + suffix
	createPartitionedTopic(t, brokers, topic, 1)
	id := "txnproducer-fenced-" + suffix
	acks := &ackLog{}
	p, _ := newStackProducer(t, brokers, id, 0, acks)
	send := func(p *txnProducer, v string) error {
		if err := p.BeginTxn(); err != nil {
			return err
		}
		if err := p.Send(topicPartition{topic, 0}, &producedRecord{rec: sarama.Record{Value: []byte(v)}}); err != nil {
			return err
		}
		return p.CommitTxn()
	}
	if err := send(p, "before"); err != nil {
		t.Fatal(err)
	}
	p2, _ := newStackProducer(t, brokers, id, 0, &ackLog{})
	err := send(p, "fenced")
	if err == nil {
		t.Fatal("a fenced producer committed")
	}
	w := &Writer{cfg: Config{TransactionalID: id, TransactionTimeout: time.Minute}}
	if werr := w.kafkaError("writing", err); !errors.Is(err, sarama.ErrProducerFenced) && !errors.Is(err, sarama.ErrInvalidProducerEpoch) ||
		!strings.Contains(werr.Error(), "was fenced") {
		t.Errorf("the fenced producer's error: %v; the writer says: %v", err, werr)
	}
	if err := send(p2, "after"); err != nil {
		t.Fatal(err)
	}
	if got := consume(t, brokers, []string{topic}, kgo.ReadCommitted(), 2); strings.Join(got, ",") != "before,after" {
		t.Errorf("read_committed: %v", got)
	}
}

func createPartitionedTopic(t *testing.T, brokers []string, topic string, partitions int32) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, baseConfig("txnproducer-test", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
	t.Cleanup(func() {
		if a, err := sarama.NewClusterAdmin(brokers, baseConfig("txnproducer-test", 10*time.Second)); err == nil {
			_ = a.DeleteTopic(topic)
			a.Close()
		}
	})
}

// TestTxnProducerRetriesPassingErrors: a leader that answers a produce request with
// NOT_LEADER_OR_FOLLOWER (a topic just created whose leader does not know it yet) gets the same
// batches again, and each record is kept once, in order; an answer no retry cures fails the
// producer, and nothing of its transaction is committed.
func TestTxnProducerRetriesPassingErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int16
		fail bool
	}{
		{"not leader", int16(sarama.ErrNotLeaderForPartition), false},
		{"not enough replicas", int16(sarama.ErrNotEnoughReplicas), false},
		{"invalid record", int16(sarama.ErrInvalidRecord), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "r"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			refused := 0
			c.ControlKey(kmsg.Produce.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
				return produceAnswer(r.(*kmsg.ProduceRequest), func(int32) int16 { refused++; return tc.code }), nil, true
			})
			p := newFakeProducer(t, c, "retry", 4096, 0, &ackLog{})
			if err := p.BeginTxn(); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := range 300 {
				v := fmt.Sprintf("%03d-%s", i, strings.Repeat("v", 50))
				if err := p.Send(topicPartition{"r", int32(i % 3)}, &producedRecord{rec: sarama.Record{Value: []byte(v)}}); err != nil {
					if tc.fail {
						break
					}
					t.Fatal(err)
				}
				if i%3 == 0 {
					want = append(want, v)
				}
			}
			err = p.CommitTxn()
			if refused == 0 {
				t.Fatal("no produce request was refused: the test proves nothing")
			}
			if tc.fail {
				if err == nil || !errors.Is(err, sarama.ErrInvalidRecord) {
					t.Fatalf("commit after %s: %v", tc.name, err)
				}
				if err := p.AbortTxn(); err != nil {
					t.Errorf("aborting: %v", err)
				}
				want = nil
			} else if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"r": {0: kgo.NewOffset().AtStart()}}),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var got []string
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("partition 0 holds %d records, want %d:\n%v", len(got), len(want), got)
			}
		})
	}
}

// TestTxnProducerRetriesAnUnknownTopicWhenAddingPartitions: a transaction coordinator that does
// not know a topic just created yet answers AddPartitionsToTxn with UNKNOWN_TOPIC_OR_PARTITION; the
// producer asks again instead of failing (which made cdcd restart its pipeline, and copy an initial
// snapshot again).
func TestTxnProducerRetriesAnUnknownTopicWhenAddingPartitions(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "new"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refused := 0
	c.ControlKey(kmsg.AddPartitionsToTxn.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		if refused == 3 {
			return nil, nil, false
		}
		refused++
		c.KeepControl()
		req := r.(*kmsg.AddPartitionsToTxnRequest)
		resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewAddPartitionsToTxnResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				sp.Partition, sp.ErrorCode = p, int16(sarama.ErrUnknownTopicOrPartition)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	p := newFakeProducer(t, c, "unknown-topic", 4096, 0, &ackLog{})
	if err := p.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(topicPartition{"new", 0}, &producedRecord{rec: sarama.Record{Value: []byte("first")}}); err != nil {
		t.Fatal(err)
	}
	if err := p.CommitTxn(); err != nil {
		t.Fatalf("committing after %d refusals: %v", refused, err)
	}
	if refused != 3 {
		t.Fatalf("%d AddPartitionsToTxn requests refused, want 3: the test proves nothing", refused)
	}
}

// TestPartitionOfWaitsForMetadata: a key is placed only among the partitions the topic has; a topic
// the metadata does not list yet is an error (the writer restarts), never a guess of one partition.
func TestPartitionOfWaitsForMetadata(t *testing.T) {
	w := open(t, newFake(t), "src", func(c *Config) { c.Timeout = time.Second })
	defer w.Close(context.Background(), false)
	seen := map[int32]bool{}
	for i := range 100 {
		p, err := w.partitionOf("b", -1, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if want := murmur2Partition([]byte(strconv.Itoa(i)), 2); p != want {
			t.Fatalf("key %d: partition %d, want %d", i, p, want)
		}
		seen[p] = true
	}
	if len(seen) != 2 {
		t.Errorf("100 keys went to partitions %v of b's two", seen)
	}
	if p, err := w.partitionOf("nosuch", -1, []byte("k")); err == nil || fault.IsTerminal(err) {
		t.Errorf("a topic missing from the metadata: partition %d, error %v (want a retryable error)", p, err)
	}
	if _, err := w.partitionOf("b", 2, nil); !fault.IsTerminal(err) {
		t.Errorf("a record naming partition 2 of two: %v (want a terminal error)", err)
	}
}

// TestTxnProducerPartialRetryKeepsItsAccounts: when a leader refuses one partition's batch of a
// request and takes the others, the batches sent again are not the ones the sender counts as done:
// every byte taken for the request is given back once, whatever the batches' sizes.
func TestTxnProducerPartialRetryKeepsItsAccounts(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refused := 0
	c.ControlKey(kmsg.Produce.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.ProduceRequest)
		if len(req.Topics) != 1 || len(req.Topics[0].Partitions) != 3 {
			c.KeepControl()
			return nil, nil, false
		}
		return produceAnswer(req, func(partition int32) int16 {
			if partition != 1 {
				return 0
			}
			refused++
			return int16(sarama.ErrNotLeaderForPartition)
		}), nil, true
	})
	acks := &ackLog{}
	p := newFakeProducer(t, c, "partial", 1<<20, time.Hour, acks)
	if err := p.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	// Batches of three sizes, closed together by the commit's flush, go in one request.
	for i := range 30 {
		part := int32(i % 3)
		v := strings.Repeat("v", 10+100*int(part))
		if err := p.Send(topicPartition{"r", part}, &producedRecord{rec: sarama.Record{Value: []byte(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	if refused == 0 {
		t.Fatal("no batch was refused: the test proves nothing")
	}
	p.mu.Lock()
	buffered := p.buffered
	p.mu.Unlock()
	if buffered != 0 {
		t.Errorf("%d bytes still counted as buffered after every batch was acknowledged", buffered)
	}
}

// produceAnswer answers every partition of a produce request with the error code code gives it
// (0: taken, at offset 0).
func produceAnswer(req *kmsg.ProduceRequest, code func(partition int32) int16) *kmsg.ProduceResponse {
	res := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, code(rp.Partition)
			st.Partitions = append(st.Partitions, sp)
		}
		res.Topics = append(res.Topics, st)
	}
	return res
}
