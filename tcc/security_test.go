package tcc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kafkasec"
)

// TestSecurity: the tcc connects with cdcd's TLS and SASL settings to a broker that wants TLS and
// SCRAM-SHA-512, and names the setting when the broker's certificate is not trusted or the settings
// are inconsistent.
func TestSecurity(t *testing.T) {
	ca := testenv.NewCA(t, "tcc test CA")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.ServerTLS(t, "127.0.0.1")), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "reader", "r3ader-pw"), kfake.SeedTopics(1, "commits"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := kafkasec.Settings{TLS: kafkasec.TLS{Enabled: true, CAFile: ca.File}, SASL: kafkasec.SASL{Mechanism: kafkasec.ScramSHA512, User: "reader", Password: "r3ader-pw"}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := func(s kafkasec.Settings) error {
		cons, err := NewConsumer(ctx, Brokers(c.ListenAddrs()...), CommitTopic("commits"), Security(s))
		if err == nil {
			cons.Close()
		}
		return err
	}
	if err := open(good); err != nil {
		t.Fatalf("good settings: %v", err)
	}
	untrusted := good
	untrusted.TLS.CAFile = testenv.NewCA(t, "another CA").File
	if err := open(untrusted); err == nil || !strings.Contains(err.Error(), "kafka.tls.ca_file") {
		t.Errorf("an untrusted certificate: err = %v", err)
	}
	if err := open(kafkasec.Settings{SASL: kafkasec.SASL{Mechanism: kafkasec.Plain, User: "u", Password: "p"}}); err == nil || !strings.Contains(err.Error(), "tcc: kafka.sasl.mechanism PLAIN") {
		t.Errorf("PLAIN without TLS: err = %v", err)
	}
}
