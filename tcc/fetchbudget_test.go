package tcc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFetchBudgetLimits(t *testing.T) {
	const maxBytes, maxPart = 2 << 20, 512 << 10
	tests := []struct {
		name                     string
		compressed, uncompressed []int // batches read before each call
		wantBytes, wantPart      []int32
		wantChanged              []bool
		have, most               int64 // the fetcher's clients (0: no fetcher)
	}{
		{"nothing read yet", nil, nil, []int32{maxBytes}, []int32{maxPart}, []bool{false}, 0, 0},
		{"uncompressed batches keep the limits", []int{1000}, []int{1000},
			[]int32{maxBytes}, []int32{maxPart}, []bool{true}, 0, 0},
		{"a fifth: a fifth of the limits", []int{200}, []int{1000},
			[]int32{maxBytes / 5}, []int32{maxPart / 5}, []bool{true}, 0, 0},
		{"a tenth of a tenth: the floor", []int{10}, []int{1000},
			[]int32{64 << 10}, []int32{64 << 10}, []bool{true}, 0, 0},
		{"steady compression changes nothing after the first", []int{200, 200, 210}, []int{1000, 1000, 1000},
			[]int32{maxBytes / 5, maxBytes / 5, 2 << 20 * 610 / 3000}, []int32{maxPart / 5, maxPart / 5, 512 << 10 * 610 / 3000},
			[]bool{true, false, false}, 0, 0},
		{"the codec changes: the limits follow", []int{200, 30000}, []int{1000, 30000},
			[]int32{maxBytes / 5, 2 << 20 * 30200 / 31000}, []int32{maxPart / 5, 512 << 10 * 30200 / 31000}, []bool{true, true}, 0, 0},
		{"one client of four: four clients' records", []int{100}, []int{1000},
			[]int32{maxBytes / 10 * 4}, []int32{maxPart / 10 * 4}, []bool{true}, 1, 4},
		{"one client of four, three tenths: at most the limits", []int{300}, []int{1000},
			[]int32{maxBytes}, []int32{maxPart}, []bool{true}, 1, 4},
		{"four of four: their own", []int{200}, []int{1000},
			[]int32{maxBytes / 5}, []int32{maxPart / 5}, []bool{true}, 4, 4},
		{"two of four", []int{100}, []int{1000},
			[]int32{maxBytes / 10 * 2}, []int32{maxPart / 10 * 2}, []bool{true}, 2, 4},
		{"one of four, uncompressed: the limits", []int{1000}, []int{1000},
			[]int32{maxBytes}, []int32{maxPart}, []bool{true}, 1, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &fetchBudget{maxBytes: maxBytes, maxPartBytes: maxPart}
			if tc.most > 0 {
				b.clients = func() (int64, int64) { return tc.have, tc.most }
			}
			for i := range tc.wantBytes {
				if i < len(tc.compressed) {
					b.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressedBytes: tc.compressed[i], UncompressedBytes: tc.uncompressed[i]})
				}
				gotBytes, gotPart, changed := b.limits()
				if gotBytes != tc.wantBytes[i] || gotPart != tc.wantPart[i] || changed != tc.wantChanged[i] {
					t.Errorf("call %d: limits %d, %d, changed %v; want %d, %d, %v", i, gotBytes, gotPart, changed, tc.wantBytes[i], tc.wantPart[i], tc.wantChanged[i])
				}
			}
		})
	}
}

// TestFetchBudgetSeesTheCodec: franz-go reports lz4 batches to the budget with their compressed and
// decompressed sizes, so the limits shrink for lz4 and stay for uncompressed batches.
func TestFetchBudgetSeesTheCodec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		codec  kgo.CompressionCodec
		shrink bool
	}{
		{"lz4", kgo.Lz4Compression(), true},
		{"none", kgo.NoCompression(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			producer, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchCompression(tc.codec), kgo.DefaultProduceTopic("t"))
			if err != nil {
				t.Fatal(err)
			}
			defer producer.Close()
			value := []byte(`{"after":{"note":"` + strings.Repeat("lorem ipsum ", 40) + `"}}`)
			const n = 500
			for range n {
				producer.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Error(err)
					}
				})
			}
			if err := producer.Flush(ctx); err != nil {
				t.Fatal(err)
			}

			budget := new(fetchBudget)
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchMaxPartitionBytes(512<<10), kgo.WithHooks(budget))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			budget.maxBytes, _ = cl.OptValue(kgo.FetchMaxBytes).(int32)
			budget.maxPartBytes, _ = cl.OptValue(kgo.FetchMaxPartitionBytes).(int32)
			for read := 0; read < n; {
				fs := cl.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("read %d of %d records: %v", read, n, err)
				}
				read += fs.NumRecords()
			}
			_, part, _ := budget.limits()
			if shrunk := part < budget.maxPartBytes/2; shrunk != tc.shrink {
				t.Errorf("partition limit %d of %d after reading %s batches (%d bytes compressed, %d decompressed)",
					part, budget.maxPartBytes, tc.name, budget.compressed, budget.uncompressed)
			}
		})
	}
}
