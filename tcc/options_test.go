package tcc

import (
	"context"
	"strings"
	"testing"
)

// TestNewConsumerRefusesBadOptions: options that cannot work are errors naming the option, before
// any connection is tried.
func TestNewConsumerRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts []Opt
		want string
	}{
		{[]Opt{CommitTopic("c")}, "tcc.Brokers"},
		{[]Opt{Brokers("127.0.0.1:1")}, "tcc.CommitTopic"},
		{[]Opt{Brokers("127.0.0.1:1"), CommitTopic("c"), FetchClients(0)}, "FetchClients(0)"},
	} {
		_, err := NewConsumer(context.Background(), c.opts...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error naming %s", err, c.want)
		}
	}
}
