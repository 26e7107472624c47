package writer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/preflight"
	"github.com/cdcd-dev/cdcd/kafkasec"
)

// KafkaVersion is the protocol level cdcd speaks: Kafka 3.6 and every 4.x broker understand it.
var KafkaVersion = sarama.V3_6_0_0

// CheckConfig is what Check needs to know of the Kafka configuration.
type CheckConfig struct {
	Brokers         []string
	ClientID        string
	TransactionalID string
	CommitTopic     string
	Timeout         time.Duration
	Security        kafkasec.Settings
	// ReplicationFactor and MinInsyncReplicas as in Config, for the topics cdcd would create.
	ReplicationFactor int16
	MinInsyncReplicas int16
	// Compression is the codec cdcd writes in, as kafka.compression names it ("": not checked).
	Compression string
}

// Check adds to r whether the brokers answer and whether transactions work: it initialises a
// transactional producer under a transactional id of its own (derived from TransactionalID, so a
// running cdcd is never fenced by a validation), then begins and aborts a transaction. It writes
// nothing. It returns an error only when ctx ends.
func Check(ctx context.Context, cfg CheckConfig, r *preflight.Report) error {
	const comp = "kafka"
	secure, err := SaramaSecurity(cfg.Security)
	if err != nil {
		r.Problem(comp, "security", err.Error(), "correct kafka.tls and kafka.sasl")
		return ctx.Err()
	}
	sc := baseConfig(cfg.ClientID, cfg.Timeout)
	secure(sc)
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		fix := "start Kafka or correct kafka.brokers (host:port of the listener, as advertised)"
		if cfg.Security != (kafkasec.Settings{}) {
			fix += "; with kafka.tls and kafka.sasl matching that listener"
		}
		r.Problem(comp, "brokers", fmt.Sprintf("no broker answered at %s (%s): %v", strings.Join(cfg.Brokers, ","), cfg.Security, ExplainSarama(cfg.Security, err)), fix)
		return ctx.Err()
	}
	defer client.Close()
	r.OK(comp, "brokers", fmt.Sprintf("%d broker(s) reachable via %s (%s)", len(client.Brokers()), strings.Join(cfg.Brokers, ","), cfg.Security))
	checkCommitTopic(client, cfg.CommitTopic, r)
	configs := checkDurability(ctx, client, cfg, r)
	checkCompression(configs, cfg.Compression, r)

	type result struct{ err error }
	done := make(chan result, 1)
	go func() { done <- result{probeTransactions(cfg, secure)} }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case res := <-done:
		if res.err != nil {
			r.Problem(comp, "transactions", fmt.Sprintf("a transactional producer could not start: %v", res.err),
				"on a cluster with fewer than 3 brokers set transaction.state.log.replication.factor and transaction.state.log.min.isr to at most the number of brokers; check that the user may use transactional ids (ACL WRITE on TransactionalId)")
			return nil
		}
	}
	r.OK(comp, "transactions", "a transactional producer initialised, began and aborted a transaction")
	return nil
}

// checkCommitTopic reports whether an existing commit topic has one partition and keeps every record.
func checkCommitTopic(client sarama.Client, topic string, r *preflight.Report) {
	const comp, what = "kafka", "commit topic"
	if topic == "" {
		return
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		r.Problem(comp, what, fmt.Sprintf("no admin client: %v", err), "check kafka.brokers")
		return
	}
	// Closing this admin would close the shared client.
	topics, err := admin.DescribeTopics([]string{topic})
	if err != nil {
		r.Problem(comp, what, fmt.Sprintf("describing %s: %v", topic, err), "grant the user DESCRIBE on the topic")
		return
	}
	if len(topics) != 1 || topics[0].Err == sarama.ErrUnknownTopicOrPartition {
		r.OK(comp, what, fmt.Sprintf("%s does not exist yet; cdcd creates it with one partition, cleanup.policy=delete and unlimited retention", topic))
		return
	}
	if topics[0].Err != sarama.ErrNoError {
		r.Problem(comp, what, fmt.Sprintf("describing %s: %v", topic, topics[0].Err), "grant the user DESCRIBE on the topic")
		return
	}
	if n := len(topics[0].Partitions); n != 1 {
		r.Problem(comp, what, fmt.Sprintf("%s has %d partitions; the commit stream needs exactly one", topic, n), "choose another kafka.commit_topic")
		return
	}
	problems, err := commitTopicProblems(admin, topic)
	if err != nil {
		r.Problem(comp, what, err.Error(), "grant the user DESCRIBE_CONFIGS on the topic")
		return
	}
	if len(problems) > 0 {
		r.Problem(comp, what, fmt.Sprintf("%s would lose commit records, and with them whole transactions: %s", topic, strings.Join(problems, "; ")),
			"keep every commit record: cleanup.policy=delete, retention.ms=-1, retention.bytes=-1 (the command above)")
		return
	}
	r.OK(comp, what, fmt.Sprintf("%s has one partition and keeps every record", topic))
}

// topicWarning is what is wrong with a topic (it can lose records Kafka acknowledged, it makes the
// broker recompress), with its fix.
type topicWarning struct{ detail, fix string }

// durabilityWarnings judges a topic with rf replicas and configuration cfg on a cluster of brokers.
func durabilityWarnings(topic string, brokers, rf int, cfg map[string]string) []topicWarning {
	var out []topicWarning
	if brokers > 1 && rf == 1 {
		out = append(out, topicWarning{fmt.Sprintf("%s has one replica on a cluster of %d brokers: losing that broker loses records Kafka acknowledged", topic, brokers),
			fmt.Sprintf("raise its replication factor to %d with kafka-reassign-partitions.sh", min(3, brokers))})
	}
	if isr, err := strconv.Atoi(cfg["min.insync.replicas"]); err == nil && rf >= 3 && isr < 2 {
		out = append(out, topicWarning{fmt.Sprintf("%s has min.insync.replicas=%d with %d replicas: a write is acknowledged by one broker, whose loss loses it", topic, isr, rf),
			fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config min.insync.replicas=2", topic)})
	}
	if cfg["unclean.leader.election.enable"] == "true" {
		out = append(out, topicWarning{fmt.Sprintf("%s allows unclean leader election: a replica that missed acknowledged records may become leader and drop them", topic),
			fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config unclean.leader.election.enable=false", topic)})
	}
	return out
}

// checkDurability warns about topics that can lose acknowledged records: the commit topic and the
// data topics its latest records name, as they are, and the replication cdcd would give the topics
// it creates. It returns the configuration of each of those topics that exists.
func checkDurability(ctx context.Context, client sarama.Client, cfg CheckConfig, r *preflight.Report) map[string]map[string]string {
	const comp, what = "kafka", "durability"
	brokers := len(client.Brokers())
	warned := false
	if cfg.ReplicationFactor == 1 && brokers > 1 {
		r.Warn(comp, what, fmt.Sprintf("kafka.replication_factor is 1 on a cluster of %d brokers: the topics cdcd creates would lose acknowledged records with a broker", brokers),
			"set kafka.replication_factor to 0 (automatic) or 3")
		warned = true
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil || cfg.CommitTopic == "" {
		if !warned {
			r.OK(comp, what, fmt.Sprintf("%d broker(s); cdcd creates its topics with enough replicas", brokers))
		}
		return nil
	}
	// Closing this admin would close the shared client.
	topics := []string{cfg.CommitTopic}
	data, err := recentDataTopics(ctx, client, cfg)
	if err != nil {
		r.Warn(comp, what, fmt.Sprintf("the data topics could not be found from the commit stream: %v", err), "check that the user may read "+cfg.CommitTopic)
		warned = true
	}
	topics = append(topics, data...)
	configs := map[string]map[string]string{}
	for _, topic := range topics {
		warnings, config := topicDurability(client, admin, topic, brokers)
		for _, w := range warnings {
			r.Warn(comp, what, w.detail, w.fix)
			warned = true
		}
		if config != nil {
			configs[topic] = config
		}
	}
	if !warned {
		detail := fmt.Sprintf("%d broker(s); no topic cdcd uses can lose acknowledged records to one broker's loss", brokers)
		if len(data) > 0 {
			detail += fmt.Sprintf(" (the commit topic and the %d data topic(s) it names lately)", len(data))
		}
		r.OK(comp, what, detail)
	}
	return configs
}

// compressionWarning tells whether a topic whose compression.type is topicCodec makes the broker
// recompress every batch cdcd writes in codec (kafka.compression's name).
func compressionWarning(topic, codec, topicCodec string) (topicWarning, bool) {
	setting := topicCodec
	if topicCodec == "uncompressed" { // Kafka's topics' name for none
		setting = "none"
	}
	if topicCodec == "" || topicCodec == "producer" || setting == codec {
		return topicWarning{}, false
	}
	return topicWarning{
		fmt.Sprintf("%s has compression.type=%s while cdcd writes %s: the broker decompresses and recompresses every batch, on every replica", topic, topicCodec, codec),
		fmt.Sprintf("kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config compression.type=producer (or set kafka.compression to %s)", topic, setting),
	}, true
}

// checkCompression warns about the topics whose configuration (configs, by topic) has a
// compression.type other than the codec cdcd writes in.
func checkCompression(configs map[string]map[string]string, codec string, r *preflight.Report) {
	const comp, what = "kafka", "compression"
	if codec == "" {
		return
	}
	checked, warned := 0, false
	for _, topic := range slices.Sorted(maps.Keys(configs)) {
		topicCodec, ok := configs[topic]["compression.type"]
		if !ok {
			continue // not the user's to describe (the durability check says so)
		}
		checked++
		if w, ok := compressionWarning(topic, codec, topicCodec); ok {
			r.Warn(comp, what, w.detail, w.fix)
			warned = true
		}
	}
	if checked > 0 && !warned {
		r.OK(comp, what, fmt.Sprintf("the %d topic(s) cdcd writes keep its %s batches as they come", checked, codec))
	}
}

// topicDurability judges an existing topic by its partitions' fewest replicas and its settings,
// and returns those settings (empty when they cannot be read); a topic that does not exist (yet)
// gives nothing.
func topicDurability(client sarama.Client, admin sarama.ClusterAdmin, topic string, brokers int) ([]topicWarning, map[string]string) {
	parts, err := client.Partitions(topic)
	if err != nil || len(parts) == 0 {
		return nil, nil
	}
	fewest := 0
	for _, p := range parts {
		replicas, err := client.Replicas(topic, p)
		if err != nil {
			return nil, nil
		}
		if fewest == 0 || len(replicas) < fewest {
			fewest = len(replicas)
		}
	}
	have := map[string]string{}
	if entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic}); err == nil {
		for _, e := range entries {
			have[e.Name] = e.Value
		}
	}
	return durabilityWarnings(topic, brokers, fewest, have), have
}

// recentDataTopics are the data topics named by the commit stream's latest records (at most
// recentCommits of them): where cdcd has been writing.
func recentDataTopics(ctx context.Context, client sarama.Client, cfg CheckConfig) ([]string, error) {
	const recentCommits = 512
	end, err := client.GetOffset(cfg.CommitTopic, 0, sarama.OffsetNewest)
	if err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return nil, nil
		}
		return nil, err
	}
	begin, err := client.GetOffset(cfg.CommitTopic, 0, sarama.OffsetOldest)
	if err != nil || end <= begin {
		return nil, err
	}
	security, err := cfg.Security.Kgo()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	err = commitsIn(ctx, cfg.Brokers, security, cfg.CommitTopic, max(begin, end-recentCommits), end, cfg.Timeout, func(rec *bookmark.CommitRecord) {
		for _, rg := range rec.Ranges {
			seen[rg.Topic] = true
		}
	})
	return slices.Sorted(maps.Keys(seen)), err
}

func probeTransactions(cfg CheckConfig, secure func(*sarama.Config)) error {
	pc := producerConfig(cfg.ClientID, cfg.TransactionalID+".validate", cfg.Timeout)
	secure(pc)
	p, err := sarama.NewAsyncProducer(cfg.Brokers, pc)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.BeginTxn(); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := p.AbortTxn(); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	if p.TxnStatus()&sarama.ProducerTxnFlagInError != 0 {
		return errors.New("the producer is in error after aborting an empty transaction")
	}
	return nil
}

func baseConfig(clientID string, timeout time.Duration) *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = KafkaVersion
	sc.ClientID = clientID
	sc.Net.DialTimeout = timeout
	sc.Net.ReadTimeout = timeout
	sc.Net.WriteTimeout = timeout
	sc.Metadata.Retry.Max = 2
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	// cdcd creates its topics itself, with their settings: a metadata request (validate looking at
	// the commit topic) must never create one with the broker's defaults.
	sc.Metadata.AllowAutoTopicCreation = false
	return sc
}

// producerConfig is an idempotent, transactional producer: acks from all in-sync replicas, one
// request in flight per broker so retries cannot reorder.
func producerConfig(clientID, transactionalID string, timeout time.Duration) *sarama.Config {
	sc := baseConfig(clientID, timeout)
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Transaction.ID = transactionalID
	sc.Producer.Transaction.Timeout = time.Minute
	sc.Producer.Transaction.Retry.Max = 20
	sc.Producer.Transaction.Retry.Backoff = 250 * time.Millisecond
	sc.Net.MaxOpenRequests = 1
	return sc
}
