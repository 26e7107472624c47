package writer

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// txnProducer is a transactional, idempotent Kafka producer made of sarama's protocol layer (its
// Client for metadata and connections, its request types) instead of sarama's AsyncProducer.
//
// The AsyncProducer hands every record through a chain of goroutines and channels and returns
// every acknowledgement on a channel of its own: about 5 µs of CPU per record here, more than
// reading the record from PostgreSQL costs. txnProducer appends a record to its partition's open
// batch on the caller's goroutine; one goroutine per broker sends closed batches, one request in
// flight, and acknowledgements come once per batch, as its first offset and record count.
//
// A batch a partition's leader answers with a passing condition (a topic just created whose leader
// does not know it yet, too few replicas in sync) is sent again, with its sequence number, so Kafka
// keeps it once. Any other failure, a lost connection or a partition whose leader moved fails the
// producer: the open Kafka transaction can then only be aborted, and the writer starts again from
// its last durable position with a new producer, whose InitProducerId fences this one and aborts
// what it left open. Requests to the transaction coordinator (InitProducerId, AddPartitionsToTxn,
// EndTxn) are retried while the coordinator answers that it is busy or moved.
type txnProducer struct {
	client  sarama.Client
	id      string
	timeout time.Duration // how long a request may take, and a coordinator's retries in all
	// maxBatch bounds a batch's estimated size (the broker refuses one over the topic's
	// max.message.bytes); maxBuffered bounds the bytes of closed batches not yet acknowledged.
	maxBatch, maxBuffered int
	linger                time.Duration
	records               sync.Pool // of *producedRecord, for newRecord
	// acked hears of each batch Kafka acknowledged; failed of the producer's first failure. Both
	// are called from the brokers' goroutines, without the producer's lock.
	acked  func(topic string, partition int32, first int64, records int)
	failed func(error)

	pid   int64
	epoch int16

	mu       sync.Mutex
	changed  *sync.Cond // broadcast when a request ends, the producer fails or closes
	parts    map[topicPartition]*partitionState
	senders  map[int32]*brokerSender
	buffered int // bytes of closed batches not yet acknowledged
	err      error
	inTxn    bool
	closed   bool

	addMu sync.Mutex              // serialises AddPartitionsToTxn; guards added
	added map[topicPartition]bool // the partitions the open Kafka transaction has
	// alsoAdd joins every transaction with its first partition (the commit topic's, which every
	// transaction ends in), saving a request to the coordinator.
	alsoAdd topicPartition
	// codec compresses every batch, at its default level: a batch's own level is 0 unless set, which
	// for gzip means no compression at all.
	codec sarama.CompressionCodec
}

type partitionState struct {
	tp     topicPartition
	seq    int32 // the sequence number of the partition's next batch
	open   *recordBatch
	sender *brokerSender
	// lastRecords is how many records the partition's last batch closed with: a new batch's lists
	// start with that much room rather than growing, and copying, a dozen times.
	lastRecords int
}

type recordBatch struct {
	ps    *partitionState
	rb    sarama.RecordBatch
	recs  []*producedRecord // rb.Records' own storage, for reuse once acknowledged
	bytes int
}

// brokerSender sends the batches of the partitions one broker leads, a request at a time.
type brokerSender struct {
	broker *sarama.Broker
	parts  []*partitionState // guarded by the producer's mu, as are ready and busy
	ready  []*recordBatch    // closed batches, in order
	busy   bool
	wake   chan struct{}
	done   chan struct{}
}

// producedRecord is one record on its way: sarama's record and its headers in one allocation.
type producedRecord struct {
	rec     sarama.Record
	headers [6]sarama.RecordHeader
	ptrs    [6]*sarama.RecordHeader
}

// newRecord is an empty record to fill and Send: one of those acknowledged earlier, when there is
// one, since a record with its headers is a few hundred bytes of pointers, and a backlog writes
// hundreds of thousands a second.
func (p *txnProducer) newRecord() *producedRecord {
	if r, ok := p.records.Get().(*producedRecord); ok {
		return r
	}
	return &producedRecord{}
}

// recycle keeps the records of an acknowledged batch for newRecord; nothing refers to them any
// more, and they let go of their keys, values and headers.
func (p *txnProducer) recycle(b *recordBatch) {
	for _, r := range b.recs {
		*r = producedRecord{}
		p.records.Put(r)
	}
	b.recs, b.rb.Records = nil, nil
}

// setHeaders points the record's headers at hs, in the record's own storage when they fit.
func (r *producedRecord) setHeaders(hs []sarama.RecordHeader) {
	ptrs := r.ptrs[:0]
	if len(hs) > len(r.ptrs) {
		ptrs = make([]*sarama.RecordHeader, 0, len(hs))
	}
	for i := range hs {
		ptrs = append(ptrs, &hs[i])
	}
	r.rec.Headers = ptrs
}

// recordOverhead bounds what a record adds to a batch beyond its key, value and headers' bytes
// (its length, attributes, timestamp and offset deltas and the lengths, all varints); a header
// adds 4 for its two lengths.
const recordOverhead = 40

// batchOverhead is a record batch's header.
const batchOverhead = 61

// Versions of the requests, all understood by Kafka 3.6 and later (KafkaVersion).
const (
	produceVersion            = 9
	initProducerIDVersion     = 4
	addPartitionsToTxnVersion = 3
	endTxnVersion             = 3
)

// newTxnProducer fences any earlier producer with the transactional id (aborting its open
// transaction) and returns a producer ready for BeginTxn.
func newTxnProducer(client sarama.Client, id string, txnTimeout, timeout time.Duration, maxBatch int, linger time.Duration,
	acked func(string, int32, int64, int), failed func(error)) (*txnProducer, error) {
	// Four batches' worth buffered keeps a broker's next request full while one is in flight; eight
	// gave no more rows/s and 10 MiB more RSS (docs/benchmarks.md).
	p := &txnProducer{client: client, id: id, timeout: timeout, maxBatch: maxBatch, maxBuffered: 4 * max(maxBatch, 1<<20),
		linger: linger, acked: acked, failed: failed,
		parts: map[topicPartition]*partitionState{}, senders: map[int32]*brokerSender{}}
	p.changed = sync.NewCond(&p.mu)
	err := p.coordinate("initialising the transactional producer", func(b *sarama.Broker) (sarama.KError, error) {
		res, err := b.InitProducerID(&sarama.InitProducerIDRequest{Version: initProducerIDVersion, TransactionalID: &id,
			TransactionTimeout: txnTimeout, ProducerID: -1, ProducerEpoch: -1})
		if err != nil {
			return 0, err
		}
		p.pid, p.epoch = res.ProducerID, res.ProducerEpoch
		return res.Err, nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// BeginTxn starts a Kafka transaction; the coordinator hears of it with its first partition.
func (p *txnProducer) BeginTxn() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if p.inTxn {
		return errors.New("a Kafka transaction is already open")
	}
	p.inTxn = true
	p.addMu.Lock()
	p.added = map[topicPartition]bool{}
	p.addMu.Unlock()
	return nil
}

// InTxn tells whether a Kafka transaction is open.
func (p *txnProducer) InTxn() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inTxn
}

// Send appends a record to its partition's batch. It blocks while the closed batches not yet
// acknowledged reach maxBuffered.
func (p *txnProducer) Send(tp topicPartition, r *producedRecord) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.err == nil && p.buffered >= p.maxBuffered {
		p.changed.Wait()
	}
	if p.err != nil {
		return p.err
	}
	if !p.inTxn {
		return errors.New("a record outside a Kafka transaction")
	}
	ps := p.parts[tp]
	if ps == nil {
		var err error
		if ps, err = p.partition(tp); err != nil {
			return err
		}
	}
	size := len(r.rec.Key) + len(r.rec.Value) + recordOverhead
	for _, h := range r.rec.Headers {
		size += len(h.Key) + len(h.Value) + 4
	}
	if b := ps.open; b != nil && b.bytes+size > p.maxBatch {
		p.closeBatch(ps)
	}
	b := ps.open
	now := time.Now().Truncate(time.Millisecond)
	if b == nil {
		b = &recordBatch{ps: ps, bytes: batchOverhead, rb: sarama.RecordBatch{Version: 2, FirstTimestamp: now, MaxTimestamp: now,
			ProducerID: p.pid, ProducerEpoch: p.epoch, IsTransactional: true,
			Codec: p.codec, CompressionLevel: sarama.CompressionLevelDefault, Records: make([]*sarama.Record, 0, ps.lastRecords)},
			recs: make([]*producedRecord, 0, ps.lastRecords)}
		ps.open = b
		wake(ps.sender) // it times the linger from now
	}
	r.rec.OffsetDelta = int64(len(b.rb.Records))
	r.rec.TimestampDelta = now.Sub(b.rb.FirstTimestamp)
	b.rb.MaxTimestamp = now
	b.rb.Records = append(b.rb.Records, &r.rec)
	b.recs = append(b.recs, r)
	b.bytes += size
	if b.bytes >= p.maxBatch {
		p.closeBatch(ps)
	}
	return nil
}

// partition finds the leader of a partition new to the producer. Called with mu held.
func (p *txnProducer) partition(tp topicPartition) (*partitionState, error) {
	var leader *sarama.Broker
	var err error
	deadline := time.Now().Add(p.timeout)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		if leader, err = p.client.Leader(tp.topic, tp.partition); err == nil {
			break
		}
		// A topic just created may have no leader yet.
		if time.Now().After(deadline) || !(errors.Is(err, sarama.ErrLeaderNotAvailable) || errors.Is(err, sarama.ErrUnknownTopicOrPartition)) {
			return nil, fmt.Errorf("finding the leader of %s partition %d: %w", tp.topic, tp.partition, err)
		}
		time.Sleep(backoff)
		_ = p.client.RefreshMetadata(tp.topic)
	}
	s := p.senders[leader.ID()]
	if s == nil {
		s = &brokerSender{broker: leader, wake: make(chan struct{}, 1), done: make(chan struct{})}
		p.senders[leader.ID()] = s
		go p.run(s)
	}
	ps := &partitionState{tp: tp, sender: s}
	s.parts = append(s.parts, ps)
	p.parts[tp] = ps
	return ps, nil
}

func wake(s *brokerSender) {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// closeBatch hands a partition's open batch to its broker's sender. Called with mu held.
func (p *txnProducer) closeBatch(ps *partitionState) {
	b := ps.open
	ps.open = nil
	ps.lastRecords = len(b.recs)
	ps.sender.ready = append(ps.sender.ready, b)
	p.buffered += b.bytes
	wake(ps.sender)
}

// Flush closes every open batch, so that they are sent without waiting for the linger.
func (p *txnProducer) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.senders {
		p.closeOpen(s)
	}
}

// closeOpen closes the open batches of the partitions s sends. Called with mu held.
func (p *txnProducer) closeOpen(s *brokerSender) {
	for _, ps := range s.parts {
		if ps.open != nil {
			p.closeBatch(ps)
		}
	}
}

// drop forgets the batches of s not yet sent, open or closed: they were never numbered, so the
// partitions' sequences stay whole. Called with mu held.
func (p *txnProducer) drop(s *brokerSender) {
	for _, b := range s.ready {
		p.buffered -= b.bytes
	}
	s.ready = nil
	for _, ps := range s.parts {
		ps.open = nil
	}
}

// maxRequest bounds the batches of one produce request.
const maxRequest = 16 << 20

// run is a broker's sender: it sends the closed batches of the partitions the broker leads, and
// those open for longer than the linger, one request at a time.
func (p *txnProducer) run(s *brokerSender) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		p.mu.Lock()
		batches, wait := p.take(s)
		s.busy = len(batches) > 0
		closed := p.closed
		p.mu.Unlock()
		if len(batches) == 0 {
			if closed {
				return
			}
			if wait > 0 {
				timer.Reset(wait)
			}
			select {
			case <-s.wake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		err := p.produce(s, batches)
		p.mu.Lock()
		s.busy = false
		for _, b := range batches {
			p.buffered -= b.bytes
		}
		// The failure is recorded with the request's end, so that no one waiting for the request
		// sees it over without its failure.
		first := err != nil && p.failLocked(err)
		p.changed.Broadcast()
		p.mu.Unlock()
		if first {
			p.failed(err)
		}
	}
}

// take closes the open batches whose linger is over and takes the broker's closed batches (up to
// maxRequest bytes), numbering them in each partition's sequence; wait is how long until the next
// open batch's linger ends (0: none is open). A failed producer drops what it holds. Called with
// mu held.
func (p *txnProducer) take(s *brokerSender) (batches []*recordBatch, wait time.Duration) {
	if p.err != nil {
		p.drop(s)
		return nil, 0
	}
	if len(s.ready) == 0 {
		// Batches are sent when full, on Flush, or once the linger is over (at once with none).
		now := time.Now()
		for _, ps := range s.parts {
			if b := ps.open; b != nil {
				if left := p.linger - now.Sub(b.rb.FirstTimestamp); left <= 0 {
					p.closeBatch(ps)
				} else if wait == 0 || left < wait {
					wait = left
				}
			}
		}
	}
	// A request holds one batch of a partition: its later batches wait for the next.
	bytes, left := 0, s.ready[:0]
	for _, b := range s.ready {
		same := func(t *recordBatch) bool { return t.ps == b.ps }
		if (len(batches) > 0 && bytes+b.bytes > maxRequest) || slices.ContainsFunc(batches, same) || slices.ContainsFunc(left, same) {
			left = append(left, b)
			continue
		}
		b.rb.FirstSequence = b.ps.seq
		b.ps.seq += int32(len(b.rb.Records))
		bytes += b.bytes
		batches = append(batches, b)
	}
	clear(s.ready[len(left):])
	s.ready = left
	return batches, wait
}

// produce sends a request and reports its batches' acknowledgements. A batch the leader answers
// with a passing condition (it is not yet or no longer the leader as far as it knows, too few
// replicas are in sync, a timeout) is sent again, with the same sequence number so that Kafka
// keeps it once, for at most the producer's timeout; then, or on any other answer, it fails.
func (p *txnProducer) produce(s *brokerSender, batches []*recordBatch) error {
	if err := p.addPartitions(batches); err != nil {
		return err
	}
	deadline := time.Now().Add(p.timeout)
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		req := &sarama.ProduceRequest{TransactionalID: &p.id, RequiredAcks: sarama.WaitForAll,
			Timeout: int32(p.timeout / 2 / time.Millisecond), Version: produceVersion}
		for _, b := range batches {
			b.rb.LastOffsetDelta = int32(len(b.rb.Records) - 1)
			req.AddBatch(b.ps.tp.topic, b.ps.tp.partition, &b.rb)
		}
		res, err := s.broker.Produce(req)
		if err != nil {
			return fmt.Errorf("writing to broker %d (%s): %w", s.broker.ID(), s.broker.Addr(), err)
		}
		// A fresh slice: the caller counts the request's batches done from its own, which must
		// not be overwritten with the ones sent again.
		var again []*recordBatch
		var last error
		for _, b := range batches {
			tp := b.ps.tp
			blk := res.GetBlock(tp.topic, tp.partition)
			switch {
			case blk == nil:
				return fmt.Errorf("writing to %s partition %d: broker %d did not answer for it", tp.topic, tp.partition, s.broker.ID())
			case blk.Err == sarama.ErrNoError:
				p.acked(tp.topic, tp.partition, blk.Offset, len(b.rb.Records))
				p.recycle(b)
			case passing(blk.Err) && time.Now().Before(deadline):
				again = append(again, b)
				last = blk.Err
			default:
				return fmt.Errorf("writing to %s partition %d: %w", tp.topic, tp.partition, blk.Err)
			}
		}
		if len(again) == 0 {
			return nil
		}
		batches = again
		time.Sleep(backoff)
		for _, b := range batches {
			tp := b.ps.tp
			_ = p.client.RefreshMetadata(tp.topic)
			if leader, err := p.client.Leader(tp.topic, tp.partition); err == nil && leader.ID() != s.broker.ID() {
				// The partition moved: its batches would now go through another sender. Failing
				// restarts the writer, which finds the new leaders.
				return fmt.Errorf("writing to %s partition %d: its leader moved from broker %d to %d: %w", tp.topic, tp.partition, s.broker.ID(), leader.ID(), last)
			}
		}
	}
}

// passing tells the partition errors that a later attempt of the same batch can cure.
func passing(err sarama.KError) bool {
	switch err {
	case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrUnknownTopicOrPartition,
		sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrRequestTimedOut,
		sarama.ErrNetworkException, sarama.ErrKafkaStorageError, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch:
		return true
	}
	return false
}

// addPartitions adds the batches' partitions new to the open transaction to it, as Kafka requires
// before their records are written.
func (p *txnProducer) addPartitions(batches []*recordBatch) error {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	var add map[string][]int32
	for _, b := range batches {
		if tp := b.ps.tp; !p.added[tp] {
			if add == nil {
				add = map[string][]int32{}
				if len(p.added) == 0 && p.alsoAdd.topic != "" && tp != p.alsoAdd {
					add[p.alsoAdd.topic] = []int32{p.alsoAdd.partition}
					p.added[p.alsoAdd] = true
				}
			}
			add[tp.topic] = append(add[tp.topic], tp.partition)
			p.added[tp] = true
		}
	}
	if add == nil {
		return nil
	}
	return p.coordinate("adding partitions to the Kafka transaction", func(c *sarama.Broker) (sarama.KError, error) {
		res, err := c.AddPartitionsToTxn(&sarama.AddPartitionsToTxnRequest{Version: addPartitionsToTxnVersion,
			TransactionalID: p.id, ProducerID: p.pid, ProducerEpoch: p.epoch, TopicPartitions: add})
		if err != nil {
			return 0, err
		}
		// One partition's error makes the others OPERATION_NOT_ATTEMPTED: the first is the answer.
		kerr := sarama.ErrNoError
		for _, pes := range res.Errors {
			for _, pe := range pes {
				if pe.Err != sarama.ErrNoError && (kerr == sarama.ErrNoError || kerr == sarama.ErrOperationNotAttempted) {
					kerr = pe.Err
				}
			}
		}
		return kerr, nil
	})
}

// CommitTxn waits for every record to be acknowledged and commits the Kafka transaction.
func (p *txnProducer) CommitTxn() error { return p.endTxn(true) }

// AbortTxn drops the records not yet sent, waits for those in flight and aborts the Kafka
// transaction.
func (p *txnProducer) AbortTxn() error { return p.endTxn(false) }

func (p *txnProducer) endTxn(commit bool) error {
	p.mu.Lock()
	if !p.inTxn {
		p.mu.Unlock()
		return errors.New("no Kafka transaction is open")
	}
	for _, s := range p.senders {
		if commit {
			p.closeOpen(s)
		} else {
			p.drop(s)
		}
	}
	for p.pending() {
		p.changed.Wait()
	}
	err := p.err
	p.mu.Unlock()
	if err != nil && commit {
		return err // the transaction stays open, for AbortTxn
	}
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if len(p.added) > 0 { // else the coordinator never heard of the transaction
		what := "committing the Kafka transaction"
		if !commit {
			what = "aborting the Kafka transaction"
		}
		err = p.coordinate(what, func(c *sarama.Broker) (sarama.KError, error) {
			res, err := c.EndTxn(&sarama.EndTxnRequest{Version: endTxnVersion, TransactionalID: p.id, ProducerID: p.pid,
				ProducerEpoch: p.epoch, TransactionResult: commit})
			if err != nil {
				return 0, err
			}
			return res.Err, nil
		})
	}
	if err == nil || !commit {
		p.mu.Lock()
		p.inTxn = false
		p.mu.Unlock()
	}
	return err
}

// pending tells whether a batch is closed but unacknowledged. Called with mu held.
func (p *txnProducer) pending() bool {
	if p.err != nil {
		// A failed producer's senders drop what they hold; only a request in flight is waited for.
		for _, s := range p.senders {
			if s.busy {
				return true
			}
		}
		return false
	}
	for _, s := range p.senders {
		if s.busy || len(s.ready) > 0 {
			return true
		}
	}
	return false
}

// failLocked records err unless the producer failed before, and tells whether it was the first
// failure. Called with mu held.
func (p *txnProducer) failLocked(err error) bool {
	if p.err != nil {
		return false
	}
	p.err = err
	for _, s := range p.senders {
		wake(s) // to drop what they hold
	}
	return true
}

// Close stops the senders, waiting for a request in flight at most the producer's timeout. The
// client stays open: it is the caller's.
func (p *txnProducer) Close() {
	p.mu.Lock()
	p.closed = true
	if p.err == nil {
		p.err = errors.New("the producer is closed")
	}
	senders := make([]*brokerSender, 0, len(p.senders))
	for _, s := range p.senders {
		senders = append(senders, s)
		wake(s)
	}
	p.changed.Broadcast()
	p.mu.Unlock()
	deadline := time.After(p.timeout)
	for _, s := range senders {
		select {
		case <-s.done:
		case <-deadline:
			return
		}
	}
}

// coordinate makes a request to the transaction coordinator, retrying while it is loading, busy
// with the previous transaction's end, moved or unreachable, for at most the producer's timeout.
func (p *txnProducer) coordinate(what string, call func(*sarama.Broker) (sarama.KError, error)) error {
	deadline := time.Now().Add(p.timeout)
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		coordinator, err := p.client.TransactionCoordinator(p.id)
		kerr := sarama.ErrNoError
		if err == nil {
			kerr, err = call(coordinator)
		}
		if err == nil && kerr == sarama.ErrNoError {
			return nil
		}
		switch {
		case err != nil, kerr == sarama.ErrNotCoordinatorForConsumer, kerr == sarama.ErrConsumerCoordinatorNotAvailable:
			_ = p.client.RefreshTransactionCoordinator(p.id)
		case kerr == sarama.ErrConcurrentTransactions, kerr == sarama.ErrOffsetsLoadInProgress:
		case kerr == sarama.ErrUnknownTopicOrPartition:
			// A topic just created is not yet known to every broker: the coordinator learns of it
			// from the controller's metadata within moments (Kafka's own producer retries too).
		default:
			return fmt.Errorf("%s: %w", what, kerr)
		}
		if err == nil {
			err = kerr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(backoff)
	}
}
