package tcc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// kafkaFetcher reads the commit stream and the data partitions with read_committed franz-go
// clients that never skip an offset they cannot read (NoResetOffset). The data partitions are
// spread over up to cfg.fetchClients clients: a client fetches from a broker one request at a time
// and decodes the response in one goroutine, so several clients keep several fetches going.
type kafkaFetcher struct {
	cfg     config
	commits *kgo.Client
	pending []*kgo.Record // fetched commit records not yet returned
	// The data clients, and the client reading each partition. Every commit group names its
	// partitions again; only a new one needs a client's attention.
	clients []*kgo.Client
	owner   map[topicPartition]*kgo.Client
	// clientCount is len(clients), for the pollers' fetch budgets.
	clientCount atomic.Int64
	// fetched carries what each client's poller polled, in order for each client (and so for
	// each partition).
	fetched   chan fetched
	pollCtx   context.Context
	stopPolls context.CancelFunc
	polls     sync.WaitGroup
	// checkFirst: the first commit stream record must sit at the bookmark's offset.
	checkFirst bool
	slabs      recordSlabs
	segments   segmentPool
}

// fetched is what one client's poll brought: each partition's records as a segment, headers read.
type fetched struct {
	segs []partSegment
	err  error
}

type partSegment struct {
	tp  topicPartition
	seg []rec
}

// recordSlabs lends the data clients the slices they decode a batch's records into (kgo.PoolRecords).
// A fetched record is recycled as soon as its segment has taken its key, value and headers, so the
// same few slices serve every batch, where each batch would otherwise allocate its own: about 150
// bytes a record.
type recordSlabs struct{ pool sync.Pool }

func (s *recordSlabs) GetRecords(n int) []kgo.Record {
	if p, ok := s.pool.Get().(*[]kgo.Record); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]kgo.Record, n)
}

func (s *recordSlabs) PutRecords(recs []kgo.Record) { s.pool.Put(&recs) }

func newKafkaFetcher(ctx context.Context, cfg config) (*kafkaFetcher, error) {
	start := kgo.NewOffset().AtStart()
	switch cfg.start {
	case startEnd:
		start = kgo.NewOffset().AtEnd()
	case startBookmark:
		start = kgo.NewOffset().At(cfg.from.CommitOffset)
	}
	// Control records are kept so that a bookmark naming a transaction marker is caught.
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.commitTopic: {0: start}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.KeepControlRecords()}, cfg.kgoOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("tcc: connecting to Kafka: %w", err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("tcc: no broker answers at %v: %w", cfg.brokers, err)
	}
	if cfg.start == startBookmark {
		if err := checkBookmarkOffset(ctx, cl, cfg.commitTopic, cfg.from); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return &kafkaFetcher{cfg: cfg, commits: cl, checkFirst: cfg.start == startBookmark}, nil
}

// checkBookmarkOffset makes sure the bookmark's commit record can exist: a bookmark always names a
// committed commit stream record, so one at or past the stream's end is garbled or from another
// topic, and one before its start is gone.
func checkBookmarkOffset(ctx context.Context, cl *kgo.Client, topic string, b bookmark.Consumer) error {
	bounds := make(map[int64]int64, 2) // -2 earliest, -1 last stable
	for _, ts := range []int64{-2, -1} {
		off, err := listOffset(ctx, cl, topic, 0, ts)
		if err != nil {
			return err
		}
		bounds[ts] = off
	}
	switch {
	case b.CommitOffset >= bounds[-1]:
		return errorf(ErrForeignBookmark, "bookmark %s names commit offset %d, but commit topic %s ends at %d: the bookmark is garbled or from another commit topic", b, b.CommitOffset, topic, bounds[-1])
	case b.CommitOffset < bounds[-2]:
		return errorf(ErrDataGone, "bookmark %s names commit offset %d, but commit topic %s now starts at %d: raise its retention, or start from the beginning", b, b.CommitOffset, topic, bounds[-2])
	}
	return nil
}

func (f *kafkaFetcher) nextCommit(ctx context.Context) (*bookmark.CommitRecord, int64, error) {
	for len(f.pending) == 0 {
		fs := f.commits.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		if err := fetchErrors(fs, "the commit stream"); err != nil {
			return nil, 0, err
		}
		f.pending = fs.Records()
	}
	r := f.pending[0]
	f.pending = f.pending[1:]
	if f.checkFirst {
		f.checkFirst = false
		if r.Offset != f.cfg.from.CommitOffset || r.Attrs.IsControl() {
			return nil, 0, errorf(ErrForeignBookmark, "bookmark %s names commit offset %d, which holds no commit record of commit topic %s: the bookmark is garbled or from another commit topic",
				f.cfg.from, f.cfg.from.CommitOffset, r.Topic)
		}
	}
	if r.Attrs.IsControl() {
		return f.nextCommit(ctx)
	}
	c, err := bookmark.ParseCommitRecord(r.Value)
	if err != nil {
		return nil, 0, errorf(ErrInconsistent, "commit topic %s offset %d: %v", r.Topic, r.Offset, err)
	}
	return c, r.Offset, nil
}

func (f *kafkaFetcher) assign(tp topicPartition, offset int64) {
	if f.owner[tp] != nil {
		return
	}
	if f.owner == nil {
		f.owner = map[topicPartition]*kgo.Client{}
		f.pollCtx, f.stopPolls = context.WithCancel(context.Background())
		f.fetched = make(chan fetched)
	}
	parts := map[string]map[int32]kgo.Offset{tp.topic: {tp.partition: kgo.NewOffset().At(offset)}}
	if len(f.clients) < f.cfg.fetchClients {
		opts := append([]kgo.Opt{kgo.SeedBrokers(f.cfg.brokers...), kgo.ConsumePartitions(parts),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NoResetOffset()),
			// Partitions join as commit groups name them; a new one is fetched from the next fetch
			// request on, so keep long polls short and metadata fresh.
			kgo.FetchMaxWait(200 * time.Millisecond), kgo.MetadataMinAge(50 * time.Millisecond),
			// Fetched but unmerged records are the consumer's memory: keep responses modest, 8 MiB
			// at most over all the clients, half a MiB a partition. A partition's queue holds what
			// one response brought beyond its bound, and each record decoded costs as much again
			// as its bytes: at 1 MiB a partition four partitions peaked at 59-74 MiB of heap, at
			// half that 47-58 MiB, no slower (docs/benchmarks.md).
			// Kafka counts these limits in the bytes it stores, compressed; budget scales them
			// down by the compression the client has seen, so that a response brings as many
			// records whatever the codec.
			kgo.FetchMaxBytes(int32(max(1<<20, 8<<20/f.cfg.fetchClients))), kgo.FetchMaxPartitionBytes(512 << 10),
			kgo.WithPools(&f.slabs)}, f.cfg.kgoOpts...)
		budget := &fetchBudget{clients: func() (have, most int64) { return f.clientCount.Load(), int64(f.cfg.fetchClients) }}
		cl, err := kgo.NewClient(append(opts, kgo.WithHooks(budget))...)
		if err == nil {
			budget.maxBytes, _ = cl.OptValue(kgo.FetchMaxBytes).(int32)
			budget.maxPartBytes, _ = cl.OptValue(kgo.FetchMaxPartitionBytes).(int32)
			f.clients = append(f.clients, cl)
			f.clientCount.Store(int64(len(f.clients)))
			f.owner[tp] = cl
			f.polls.Add(1)
			go f.poll(cl, budget)
			return
		}
		// NewClient fails only on invalid options, which the commit client already accepted.
		f.cfg.log.Error("tcc: creating a data client", "err", err)
		if len(f.clients) == 0 {
			return // fetch reports that nothing is read
		}
	}
	// The client reading the fewest partitions takes it.
	load := map[*kgo.Client]int{}
	for _, c := range f.owner {
		load[c]++
	}
	cl := f.clients[0]
	for _, c := range f.clients[1:] {
		if load[c] < load[cl] {
			cl = c
		}
	}
	f.owner[tp] = cl
	// A topic new to the client is fetched once its metadata arrives, so ask for it now.
	cl.AddConsumePartitions(parts)
	cl.ForceMetadataRefresh()
}

// poll hands on what cl fetches, as segments with their ordering headers read, until the
// fetcher closes. Reading the headers here, one goroutine per client, leaves the assembler's one
// goroutine only the merge; and holding one fetch while the assembler merges the one before lets
// cl fetch the next meanwhile.
func (f *kafkaFetcher) poll(cl *kgo.Client, budget *fetchBudget) {
	defer f.polls.Done()
	for {
		fs := cl.PollFetches(f.pollCtx)
		if f.pollCtx.Err() != nil {
			return
		}
		if maxBytes, maxPartBytes, changed := budget.limits(); changed {
			cl.UpdateFetchMaxBytes(maxBytes, maxPartBytes)
		}
		out := fetched{err: fetchErrors(fs, "data")}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			seg := f.segments.get(len(p.Records))
			for i, r := range p.Records {
				seg[i] = rec{offset: r.Offset, key: r.Key, value: r.Value, headers: r.Headers}
				// The segment keeps what it needs of r; r's memory goes back to f.slabs.
				r.Recycle()
			}
			readSegment(seg)
			out.segs = append(out.segs, partSegment{topicPartition{p.Topic, p.Partition}, seg})
		})
		select {
		case f.fetched <- out:
		case <-f.pollCtx.Done():
			return
		}
	}
}

// fetchBudget keeps a data client's fetches at the same bytes of records whatever the codec of
// their batches. Kafka's fetch limits count the bytes as it stores them, and lz4 (cdcd's default)
// packs four to six times the records into them; decompressed, those records are the consumer's
// memory: at four partitions, fetches of half a MiB of lz4 batches took the Go heap from 45-55 to
// 83-108 MiB (docs/benchmarks.md). It watches the batches the client reads, and limits scales the
// client's own limits by their compression.
//
// The memory bound is for all the clients the tcc may create (FetchClients): while it has fewer (a
// topic of fewer partitions), each may fetch the records of the others, up to its own limits as
// configured. At one lz4 partition, fetches of a sixth of half a MiB made the tcc read 0.75-0.85 of
// a plain consumer (medians of five reads), against 0.88-0.90 with the limits unscaled.
type fetchBudget struct {
	maxBytes, maxPartBytes int32 // the client's limits as configured, in bytes of records
	// clients tells how many clients the fetcher has and how many it may have; nil: one of one.
	clients func() (have, most int64)

	mu                       sync.Mutex
	compressed, uncompressed int64 // of the batches read lately: halved past fetchBudgetWindow
	applied                  int32 // the partition limit last returned by limits
}

// fetchBudgetWindow is how many bytes of records the compression is judged over, the older ones
// counting for less; fetchBudgetFloor is the least a scaled limit falls to (Kafka returns a whole
// batch anyway when the first is larger).
const (
	fetchBudgetWindow = 64 << 20
	fetchBudgetFloor  = 64 << 10
)

func (b *fetchBudget) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.compressed += int64(m.CompressedBytes)
	b.uncompressed += int64(m.UncompressedBytes)
	if b.uncompressed > fetchBudgetWindow {
		b.compressed, b.uncompressed = b.compressed/2, b.uncompressed/2
	}
}

// limits returns the fetch limits that bring about the configured bytes of records, and whether
// they differ by more than an eighth from those it last reported as changed (the first call after
// a batch was read reports them as changed).
func (b *fetchBudget) limits() (maxBytes, maxPartBytes int32, changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.compressed <= 0 || b.maxPartBytes <= 0 {
		return b.maxBytes, b.maxPartBytes, false
	}
	have, most := int64(1), int64(1)
	if b.clients != nil {
		have, most = b.clients()
		have, most = max(have, 1), max(most, have, 1)
	}
	scale := func(n int32) int32 {
		if b.uncompressed <= b.compressed {
			return n
		}
		scaled := int64(n) * b.compressed / b.uncompressed * most / have
		return int32(min(int64(n), max(scaled, fetchBudgetFloor)))
	}
	maxBytes, maxPartBytes = scale(b.maxBytes), scale(b.maxPartBytes)
	if last := b.applied; last == 0 || 8*abs(int64(maxPartBytes)-int64(last)) > int64(last) {
		b.applied = maxPartBytes
		return maxBytes, maxPartBytes, true
	}
	return maxBytes, maxPartBytes, false
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func (f *kafkaFetcher) logStart(ctx context.Context, tp topicPartition) (int64, error) {
	return listOffset(ctx, f.commits, tp.topic, tp.partition, -2)
}

// listOffset asks for a partition's earliest offset (ts -2) or its last stable offset (ts -1).
func listOffset(ctx context.Context, cl *kgo.Client, topic string, partition int32, ts int64) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = 1
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = topic
	p := kmsg.NewListOffsetsRequestTopicPartition()
	p.Partition, p.Timestamp = partition, ts
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("tcc: reading the offsets of %s/%d: %w", topic, partition, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, fmt.Errorf("tcc: %s/%d: unexpected ListOffsets response", topic, partition)
	}
	rp := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
		return 0, fmt.Errorf("tcc: %s/%d: %w", topic, partition, err)
	}
	return rp.Offset, nil
}

func (f *kafkaFetcher) fetch(ctx context.Context, queueOf func(topicPartition) *queue) error {
	if len(f.clients) == 0 {
		return errors.New("tcc: no data partition to read")
	}
	var all []fetched
	select {
	case next := <-f.fetched:
		all = append(all, next)
	case <-ctx.Done():
		return ctx.Err()
	}
	// And whatever the other clients have ready.
	for more := true; more; {
		select {
		case next := <-f.fetched:
			all = append(all, next)
		default:
			more = false
		}
	}
	var err error
	for _, fd := range all {
		err = errors.Join(err, fd.err)
	}
	if err != nil {
		return err
	}
	for _, fd := range all {
		for _, ps := range fd.segs {
			queueOf(ps.tp).add(ps.seg, &f.segments)
		}
	}
	return nil
}

// pause and resume act on the client reading tp; a partition no client reads has nothing to pause.
func (f *kafkaFetcher) pause(tp topicPartition) {
	if cl := f.owner[tp]; cl != nil {
		cl.PauseFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
	}
}

func (f *kafkaFetcher) resume(tp topicPartition) {
	if cl := f.owner[tp]; cl != nil {
		cl.ResumeFetchPartitions(map[string][]int32{tp.topic: {tp.partition}})
	}
}

func (f *kafkaFetcher) close() {
	f.commits.Close()
	if f.stopPolls != nil {
		f.stopPolls()
		f.polls.Wait()
	}
	for _, cl := range f.clients {
		cl.Close()
	}
}

// fetchErrors turns fetch errors into one; an offset that is out of range means records the commit
// stream vouches for (or the commit stream itself) are gone.
func fetchErrors(fs kgo.Fetches, what string) error {
	var err error
	fs.EachError(func(topic string, p int32, e error) {
		if errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
			return
		}
		if errors.Is(e, kerr.OffsetOutOfRange) {
			e = errorf(ErrDataGone, "%s: %s/%d: the offset to read is no longer (or not yet) in the log: %v; raise the topic's retention, or start the consumer from a later bookmark", what, topic, p, e)
		} else {
			e = fmt.Errorf("tcc: reading %s %s/%d: %w", what, topic, p, e)
		}
		err = errors.Join(err, e)
	})
	return err
}
