package kafkasec

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// serverConfig is a TLS configuration for a server whose certificate, signed by ca, names names.
func (ca *testCA) serverConfig(t *testing.T, names ...string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

const password = "pa55-W0rd-never-logged"

// secureCluster is an in-process broker that speaks TLS with a certificate for 127.0.0.1 and wants
// SCRAM-SHA-512 from user cdcd.
func secureCluster(t *testing.T, ca *testCA, names ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.serverConfig(t, names...)), kfake.EnableSASL(),
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
func connect(t *testing.T, brokers []string, s Settings) (saramaErr, kgoErr error) {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	sc.Metadata.Retry.Max = 0
	if err := s.Sarama(sc); err != nil {
		return err, err
	}
	client, err := sarama.NewClient(brokers, sc)
	if err == nil {
		_, err = client.Topics()
		client.Close()
	}
	saramaErr = s.Explain(err)
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

// TestTLSAndSCRAM: sarama and franz-go, configured from the same settings, both connect to a broker
// that wants TLS and SCRAM-SHA-512; a wrong password, an untrusted certificate and a certificate for
// another name each fail naming the setting to fix, and no error holds the password.
func TestTLSAndSCRAM(t *testing.T) {
	ca := newCA(t, "cdcd test CA")
	brokers := secureCluster(t, ca, "127.0.0.1")
	good := Settings{TLS: TLS{Enabled: true, CAFile: ca.file}, SASL: SASL{Mechanism: ScramSHA512, User: "cdcd", Password: password}}
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

	other := newCA(t, "another CA")
	otherBrokers := secureCluster(t, ca, "broker.example")
	for _, tc := range []struct {
		name    string
		brokers []string
		s       func(Settings) Settings
		want    string
	}{
		{"untrusted certificate", brokers, func(s Settings) Settings { s.TLS.CAFile = other.file; return s }, "kafka.tls.ca_file"},
		{"wrong server name", otherBrokers, func(s Settings) Settings { return s }, "kafka.tls: the broker's certificate is not for"},
		{"TLS to a plaintext port", plainBrokers(t), func(s Settings) Settings { s.SASL = SASL{}; return s }, "kafka.tls.enabled: the broker did not complete a TLS handshake"},
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

// TestExplainSASL: the brokers' own refusals, as each client reports them, name the setting. (The
// in-process broker hangs up on a wrong password instead of answering; the real cluster's answer is
// tested end to end.)
func TestExplainSASL(t *testing.T) {
	s := Settings{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: ScramSHA512, User: "cdcd", Password: password}}
	for _, err := range []error{fmt.Errorf("kafka: %w", sarama.ErrSASLAuthenticationFailed), kerr.SaslAuthenticationFailed} {
		if got := s.Explain(err); !strings.Contains(got.Error(), `kafka.sasl: the brokers refused user "cdcd" with SCRAM-SHA-512`) || !errors.Is(got, err) {
			t.Errorf("%v: %v", err, got)
		}
	}
	for _, err := range []error{sarama.ErrUnsupportedSASLMechanism, kerr.UnsupportedSaslMechanism} {
		if got := s.Explain(err); !strings.Contains(got.Error(), "kafka.sasl.mechanism: the brokers do not offer SCRAM-SHA-512") {
			t.Errorf("%v: %v", err, got)
		}
	}
	if err := errors.New("unrelated"); s.Explain(err) != err {
		t.Errorf("an unrelated error was reworded")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{}, ""},
		{Settings{TLS: TLS{CAFile: "x"}}, "need kafka.tls.enabled"},
		{Settings{TLS: TLS{Enabled: true, CertFile: "c"}}, "cert_file and key_file go together"},
		{Settings{SASL: SASL{User: "u"}}, "no mechanism"},
		{Settings{SASL: SASL{Mechanism: "GSSAPI", User: "u", Password: "p"}}, `"GSSAPI" is not one of`},
		{Settings{SASL: SASL{Mechanism: ScramSHA256, Password: "p"}}, "kafka.sasl.user is empty"},
		{Settings{SASL: SASL{Mechanism: ScramSHA256, User: "u"}}, "exactly one of password and password_file"},
		{Settings{SASL: SASL{Mechanism: Plain, User: "u", Password: "p"}}, "PLAIN sends the password in clear"},
		{Settings{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: Plain, User: "u", Password: "p"}}, ""},
	} {
		err := tc.s.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: err = %v, want %q", tc.s, err, tc.want)
		}
	}
	if s := (Settings{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: ScramSHA512, User: "cdcd", Password: password}}).String(); strings.Contains(s, password) || s != "TLS, SASL SCRAM-SHA-512 as cdcd" {
		t.Errorf("String() = %q", s)
	}
}
