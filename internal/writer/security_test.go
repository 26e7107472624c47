package writer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/kafkasec"
)

const password = "pa55-W0rd-never-logged"

// secureCluster is an in-process broker that speaks TLS with a certificate for 127.0.0.1 and wants
// SCRAM-SHA-512 from user cdcd.
func secureCluster(t *testing.T, ca *testenv.CA, names ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.ServerTLS(t, names...)), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "cdcd", password), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func plainBrokers(t *testing.T) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// connect connects both clients with s and returns their errors, explained.
func connect(t *testing.T, brokers []string, s kafkasec.Settings) (saramaErr, kgoErr error) {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	sc.Metadata.Retry.Max = 0
	secure, err := SaramaSecurity(s)
	if err != nil {
		return err, err
	}
	secure(sc)
	client, err := sarama.NewClient(brokers, sc)
	if err == nil {
		_, err = client.Topics()
		client.Close()
	}
	saramaErr = ExplainSarama(s, err)
	opts, err := s.Kgo()
	if err != nil {
		return saramaErr, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...), kgo.DialTimeout(2*time.Second))...)
	if err != nil {
		return saramaErr, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return saramaErr, s.Explain(cl.Ping(ctx))
}

// TestTLSAndSCRAM: sarama (SaramaSecurity) and franz-go (kafkasec.Settings.Kgo), configured from the same settings, both connect to a broker
// that wants TLS and SCRAM-SHA-512; a wrong password, an untrusted certificate and a certificate for
// another name each fail naming the setting to fix, and no error holds the password.
func TestTLSAndSCRAM(t *testing.T) {
	ca := testenv.NewCA(t, "cdcd test CA")
	brokers := secureCluster(t, ca, "127.0.0.1")
	good := kafkasec.Settings{TLS: kafkasec.TLS{Enabled: true, CAFile: ca.File}, SASL: kafkasec.SASL{Mechanism: kafkasec.ScramSHA512, User: "cdcd", Password: password}}
	if se, ke := connect(t, brokers, good); se != nil || ke != nil {
		t.Fatalf("good settings: sarama %v, franz-go %v", se, ke)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := good
	fromFile.SASL.Password, fromFile.SASL.PasswordFile = "", pwFile
	if se, ke := connect(t, brokers, fromFile); se != nil || ke != nil {
		t.Fatalf("password from a file: sarama %v, franz-go %v", se, ke)
	}

	other := testenv.NewCA(t, "another CA")
	otherBrokers := secureCluster(t, ca, "broker.example")
	for _, tc := range []struct {
		name    string
		brokers []string
		s       func(kafkasec.Settings) kafkasec.Settings
		want    string
	}{
		{"untrusted certificate", brokers, func(s kafkasec.Settings) kafkasec.Settings { s.TLS.CAFile = other.File; return s }, "kafka.tls.ca_file"},
		{"wrong server name", otherBrokers, func(s kafkasec.Settings) kafkasec.Settings { return s }, "kafka.tls: the broker's certificate is not for"},
		{"TLS to a plaintext port", plainBrokers(t), func(s kafkasec.Settings) kafkasec.Settings { s.SASL = kafkasec.SASL{}; return s }, "kafka.tls.enabled: the broker did not complete a TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se, ke := connect(t, tc.brokers, tc.s(good))
			for client, err := range map[string]error{"sarama": se, "franz-go": ke} {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: err = %v, want %q", client, err, tc.want)
				}
				if err != nil && strings.Contains(err.Error(), password) {
					t.Errorf("%s: the error holds the password: %v", client, err)
				}
			}
		})
	}
}

// TestExplainSarama: sarama's reports of refused credentials and of a mechanism the brokers lack
// name the setting. (The in-process broker hangs up on a wrong password instead of answering.)
func TestExplainSarama(t *testing.T) {
	s := kafkasec.Settings{TLS: kafkasec.TLS{Enabled: true}, SASL: kafkasec.SASL{Mechanism: kafkasec.ScramSHA512, User: "cdcd", Password: password}}
	if got := ExplainSarama(s, fmt.Errorf("kafka: %w", sarama.ErrSASLAuthenticationFailed)); !strings.Contains(got.Error(), `kafka.sasl: the brokers refused user "cdcd"`) {
		t.Errorf("refused credentials: %v", got)
	}
	if got := ExplainSarama(s, sarama.ErrUnsupportedSASLMechanism); !strings.Contains(got.Error(), "kafka.sasl.mechanism") {
		t.Errorf("an unsupported mechanism: %v", got)
	}
}

func TestDurabilityWarnings(t *testing.T) {
	for _, tc := range []struct {
		brokers, rf int
		cfg         map[string]string
		want        []string
	}{
		{1, 1, map[string]string{"min.insync.replicas": "1"}, nil},
		{3, 3, map[string]string{"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}, nil},
		{3, 1, map[string]string{"min.insync.replicas": "1"}, []string{"one replica on a cluster of 3 brokers"}},
		{3, 3, map[string]string{"min.insync.replicas": "1"}, []string{"min.insync.replicas=1 with 3 replicas"}},
		{3, 3, map[string]string{"min.insync.replicas": "2", "unclean.leader.election.enable": "true"}, []string{"unclean leader election"}},
		{2, 2, map[string]string{"min.insync.replicas": "1"}, nil},
	} {
		var got []string
		for _, w := range durabilityWarnings("c", tc.brokers, tc.rf, tc.cfg) {
			got = append(got, w.detail)
			if !strings.Contains(w.fix, "kafka-") {
				t.Errorf("a warning without a command: %+v", w)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%d brokers, rf %d, %v: warnings %q, want %q", tc.brokers, tc.rf, tc.cfg, got, tc.want)
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tc.want[i]) {
				t.Errorf("warning %q, want %q", got[i], tc.want[i])
			}
		}
	}
}

func TestCompressionWarning(t *testing.T) {
	for _, tc := range []struct {
		codec, topic string
		warn         bool
		fix          string
	}{
		{"lz4", "producer", false, ""},
		{"lz4", "", false, ""},
		{"lz4", "lz4", false, ""},
		{"none", "uncompressed", false, ""},
		{"lz4", "gzip", true, "kafka.compression to gzip"},
		{"none", "zstd", true, "kafka.compression to zstd"},
		{"zstd", "uncompressed", true, "kafka.compression to none"},
	} {
		w, warn := compressionWarning("t", tc.codec, tc.topic)
		if warn != tc.warn {
			t.Errorf("cdcd %s, topic %q: warning %v, want %v", tc.codec, tc.topic, warn, tc.warn)
			continue
		}
		if warn && (!strings.Contains(w.detail, "compression.type="+tc.topic+" while cdcd writes "+tc.codec) ||
			!strings.Contains(w.fix, "compression.type=producer") || !strings.Contains(w.fix, tc.fix)) {
			t.Errorf("cdcd %s, topic %q: %+v", tc.codec, tc.topic, w)
		}
	}
}
