package writer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestStackKafkaTransactionAcrossTopics proves the stack's broker gives what the writer needs: a
// sarama transactional producer commits one transaction spanning two topics and aborts another, and
// read_committed consumers (franz-go, and librdkafka through kcat) see the committed records only,
// while a read_uncommitted consumer sees both, so the test can tell the difference.
func TestStackKafkaTransactionAcrossTopics(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	suffix := fmt.Sprintf("%06d", rand.IntN(1_000_000))
	topics := []string{"stack.txn.a." + suffix, "stack.txn.b." + suffix}
	createTopics(t, brokers, topics...)

	p, err := sarama.NewAsyncProducer(brokers, producerConfig("stack-test", "stack-test-"+suffix, 10*time.Second))
	if err != nil {
		t.Fatalf("transactional producer: %v", err)
	}
	defer p.Close()
	send := func(commit bool, label string) {
		t.Helper()
		if err := p.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		for _, topic := range topics {
			p.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(label), Value: sarama.StringEncoder(label + "@" + topic)}
			select {
			case <-p.Successes():
			case err := <-p.Errors():
				t.Fatal(err)
			}
		}
		if commit {
			err = p.CommitTxn()
		} else {
			err = p.AbortTxn()
		}
		if err != nil {
			t.Fatalf("ending transaction %s: %v", label, err)
		}
	}
	send(true, "first")
	send(false, "aborted")
	send(true, "last")

	// By topic, then offset.
	committed := []string{"first@" + topics[0], "last@" + topics[0], "first@" + topics[1], "last@" + topics[1]}
	got := consume(t, brokers, topics, kgo.ReadCommitted(), len(committed))
	if !slices.Equal(got, committed) {
		t.Errorf("read_committed consumer saw %v, want %v", got, committed)
	}
	all := consume(t, brokers, topics, kgo.ReadUncommitted(), len(committed)+2)
	if !slices.Contains(all, "aborted@"+topics[0]) {
		t.Errorf("read_uncommitted consumer did not see the aborted records (%v): the test cannot tell them apart", all)
	}

	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("kcat is not installed; scripts/stack.sh installs it")
		}
		t.Skip("kcat is not installed; run scripts/stack.sh up kafka")
	}
	for i, topic := range topics {
		out, err := exec.Command(kcat, "-b", strings.Join(brokers, ","), "-C", "-t", topic, "-o", "beginning", "-e", "-q",
			"-X", "isolation.level=read_committed", "-f", "%s\n").CombinedOutput()
		if err != nil {
			t.Fatalf("kcat: %v\n%s", err, out)
		}
		want := committed[2*i] + "\n" + committed[2*i+1] + "\n"
		if string(out) != want {
			t.Errorf("kcat read_committed on %s = %q, want %q", topic, out, want)
		}
	}
}

// consume reads n records from topics (ordered by topic, then offset) and then checks that no more
// arrive for a moment.
func consume(t *testing.T, brokers, topics []string, isolation kgo.IsolationLevel, n int) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(isolation), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byTopic := map[string][]string{}
	count := 0
	deadline := time.Now().Add(30 * time.Second)
	for count < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			byTopic[r.Topic] = append(byTopic[r.Topic], string(r.Value))
			count++
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
		byTopic[r.Topic] = append(byTopic[r.Topic], string(r.Value))
	})
	var out []string
	for _, topic := range topics {
		out = append(out, byTopic[topic]...)
	}
	return out
}

func createTopics(t *testing.T, brokers []string, topics ...string) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, baseConfig("stack-test", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, topic := range topics {
		if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
			t.Fatalf("creating %s: %v", topic, err)
		}
		t.Cleanup(func() { _ = admin.DeleteTopic(topic) })
	}
}

func TestCheckStackKafka(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	var r preflight.Report
	if err := Check(context.Background(), CheckConfig{Brokers: brokers, ClientID: "t", TransactionalID: "check-test", Timeout: 10 * time.Second}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Problems() != 0 || !r.Has(preflight.OK, "kafka", "transactions") {
		t.Fatalf("findings: %+v", r.Findings)
	}
}

func TestCheckKafkaUnreachable(t *testing.T) {
	var r preflight.Report
	if err := Check(context.Background(), CheckConfig{Brokers: []string{"127.0.0.1:1"}, ClientID: "t", TransactionalID: "x", Timeout: time.Second}, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Has(preflight.Problem, "kafka", "brokers") || !strings.Contains(r.Findings[0].Fix, "kafka.brokers") {
		t.Fatalf("findings: %+v", r.Findings)
	}
}
