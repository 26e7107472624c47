package writer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// readLastCommit returns the last committed record of the commit stream, or nil when it holds none.
// It must run after the transactional producer started: that aborts any transaction a crashed
// writer left open, so the partition's last stable offset reaches its end.
func readLastCommit(ctx context.Context, brokers []string, security []kgo.Opt, client sarama.Client, topic string, timeout time.Duration) (*bookmark.CommitRecord, error) {
	if err := client.RefreshMetadata(topic); err != nil {
		return nil, fmt.Errorf("reading metadata of the commit topic %s: %w", topic, err)
	}
	end, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return nil, fmt.Errorf("reading the end of the commit topic %s: %w", topic, err)
	}
	begin, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("reading the start of the commit topic %s: %w", topic, err)
	}
	const window = 512
	for to := end; to > begin; to -= window {
		from := max(begin, to-window)
		rec, err := lastCommittedIn(ctx, brokers, security, topic, from, to, timeout)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			return rec, nil
		}
	}
	return nil, nil
}

// lastCommittedIn reads offsets [from, to) of partition 0 with read_committed and returns the last
// commit record among them.
func lastCommittedIn(ctx context.Context, brokers []string, security []kgo.Opt, topic string, from, to int64, timeout time.Duration) (*bookmark.CommitRecord, error) {
	var last *bookmark.CommitRecord
	err := commitsIn(ctx, brokers, security, topic, from, to, timeout, func(rec *bookmark.CommitRecord) { last = rec })
	return last, err
}

// commitsIn reads offsets [from, to) of partition 0 with read_committed and passes each commit record
// to each, in order. Control records are kept so that the read knows when it reached to.
func commitsIn(ctx context.Context, brokers []string, security []kgo.Opt, topic string, from, to int64, timeout time.Duration, each func(*bookmark.CommitRecord)) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}, security...)...)
	if err != nil {
		return fmt.Errorf("reading the commit topic %s: %w", topic, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	next := from
	for next < to {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("reading the commit topic %s: got to offset %d of %d within %v; a transaction of another producer may be open on it: %w", topic, next, to, 3*timeout, ctx.Err())
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return fmt.Errorf("reading the commit topic %s: %w", topic, ferr)
		}
		var perr error
		fs.EachRecord(func(r *kgo.Record) {
			next = max(next, r.Offset+1)
			if r.Attrs.IsControl() || r.Offset >= to || perr != nil {
				return
			}
			rec, err := bookmark.ParseCommitRecord(r.Value)
			if err != nil {
				perr = fmt.Errorf("commit topic %s, offset %d: %w; it is not a cdcd commit stream, or was written by another version", topic, r.Offset, err)
				return
			}
			each(rec)
		})
		if perr != nil {
			return terminal("%w", perr)
		}
	}
	return nil
}

// commitTopicSettings are the commit topic's settings that keep every record: a commit stream whose
// records are compacted away or expire loses the transactions they vouch for.
var commitTopicSettings = [][2]string{{"cleanup.policy", "delete"}, {"retention.ms", "-1"}, {"retention.bytes", "-1"}}

func commitTopicConfig() map[string]*string {
	m := map[string]*string{}
	for _, kv := range commitTopicSettings {
		m[kv[0]] = ptr(kv[1])
	}
	return m
}

// commitTopicProblems lists what in an existing commit topic's configuration would lose records,
// each with the command that fixes it.
func commitTopicProblems(admin sarama.ClusterAdmin, topic string) ([]string, error) {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		return nil, fmt.Errorf("reading the configuration of the commit topic %s: %w", topic, err)
	}
	have := map[string]string{}
	for _, e := range entries {
		have[e.Name] = e.Value
	}
	return checkCommitTopicConfig(topic, have), nil
}

func checkCommitTopicConfig(topic string, have map[string]string) []string {
	var problems, fixes []string
	for _, kv := range commitTopicSettings {
		if v, ok := have[kv[0]]; ok && v != kv[1] {
			problems = append(problems, fmt.Sprintf("%s is %s", kv[0], v))
			fixes = append(fixes, kv[0]+"="+kv[1])
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s (fix: kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config %s)",
		strings.Join(problems, ", "), topic, strings.Join(fixes, ","))}
}

func sortRanges(rs []bookmark.Range) {
	slices.SortFunc(rs, func(a, b bookmark.Range) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
}

// murmur2Partition is the Java client's partition for a key among n: murmur2 of the key, its sign
// bit cleared, modulo n.
func murmur2Partition(key []byte, n int32) int32 {
	const m, r = 0x5bd1e995, 24
	h := uint32(0x9747b28c) ^ uint32(len(key))
	for len(key) >= 4 {
		k := uint32(key[0]) | uint32(key[1])<<8 | uint32(key[2])<<16 | uint32(key[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h = h*m ^ k
		key = key[4:]
	}
	switch len(key) {
	case 3:
		h ^= uint32(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(key[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h&0x7fffffff) % n
}
