// Package kafkasec holds the security settings of a connection to Kafka, TLS and SASL, and their
// mapping onto franz-go (the commit stream reader, the tcc, cdcd tail); the writer maps the same
// settings onto sarama with TLSConfig, Password and Mechanism (kept out of this package so that a tcc
// consumer does not link sarama). Every client built from the same Settings authenticates the same
// way.
//
// Secrets never leave this package in text: Settings.String and the errors it returns name the
// setting, never the password; a password comes from the configuration (which cdcd masks), from an
// environment variable through the configuration's binding, or from a file.
package kafkasec

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Mechanism is a SASL mechanism.
type Mechanism string

// The SASL mechanisms cdcd speaks.
const (
	None        Mechanism = ""
	Plain       Mechanism = "PLAIN"
	ScramSHA256 Mechanism = "SCRAM-SHA-256"
	ScramSHA512 Mechanism = "SCRAM-SHA-512"
)

// Settings are a Kafka connection's security settings; the zero value is plaintext without
// authentication.
type Settings struct {
	TLS  TLS  `mapstructure:"tls"`
	SASL SASL `mapstructure:"sasl"`
}

// TLS configures encryption and the broker's identity.
type TLS struct {
	// Enabled turns TLS on; the other fields need it.
	Enabled bool `mapstructure:"enabled" doc:"connect to the brokers over TLS"`
	// CAFile holds the PEM certificates that sign the brokers' certificates (empty: the system's).
	CAFile string `mapstructure:"ca_file" doc:"PEM file of the CA certificates that sign the brokers' certificates (empty: the system's roots)"`
	// CertFile and KeyFile are the client's certificate and key, for brokers that ask for one.
	CertFile string `mapstructure:"cert_file" doc:"PEM client certificate, for brokers that require one (with key_file)"`
	KeyFile  string `mapstructure:"key_file" doc:"PEM private key of cert_file"`
	// ServerName overrides the name checked in the broker's certificate (empty: each broker's host).
	ServerName string `mapstructure:"server_name" doc:"the name the brokers' certificates must carry (empty: the host of each broker address)"`
	// SkipVerify turns off the check of the broker's certificate and name: for tests only.
	SkipVerify bool `mapstructure:"insecure_skip_verify" doc:"do not check the brokers' certificates (tests only: anyone can impersonate the broker)"`
}

// SASL configures authentication.
type SASL struct {
	Mechanism Mechanism `mapstructure:"mechanism" doc:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)"`
	User      string    `mapstructure:"user" doc:"SASL user name"`
	// Password, or PasswordFile naming a file that holds it (its trailing newline dropped).
	Password     string `mapstructure:"password" doc:"SASL password (or password_file; from the environment as CDCD_KAFKA_SASL_PASSWORD)"`
	PasswordFile string `mapstructure:"password_file" doc:"a file holding the SASL password"`
}

// Validate checks the settings without reading any file.
func (s Settings) Validate() error {
	t := s.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.SkipVerify) {
		return errors.New("kafka.tls: ca_file, cert_file, key_file, server_name and insecure_skip_verify need kafka.tls.enabled: true")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("kafka.tls: cert_file and key_file go together; set both or neither")
	}
	a := s.SASL
	switch a.Mechanism {
	case None:
		if a.User != "" || a.Password != "" || a.PasswordFile != "" {
			return errors.New("kafka.sasl: a user or password is set but no mechanism; set kafka.sasl.mechanism to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil
	case Plain, ScramSHA256, ScramSHA512:
	default:
		return fmt.Errorf("kafka.sasl.mechanism: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", string(a.Mechanism))
	}
	if a.User == "" {
		return fmt.Errorf("kafka.sasl.user is empty; %s needs a user", a.Mechanism)
	}
	if (a.Password == "") == (a.PasswordFile == "") {
		return errors.New("kafka.sasl: set exactly one of password and password_file")
	}
	if a.Mechanism == Plain && !t.Enabled {
		return errors.New("kafka.sasl.mechanism PLAIN sends the password in clear; turn on kafka.tls.enabled")
	}
	return nil
}

// String describes the settings without their secrets.
func (s Settings) String() string {
	var parts []string
	if s.TLS.Enabled {
		parts = append(parts, "TLS")
		if s.TLS.SkipVerify {
			parts = append(parts, "certificates not checked")
		}
	} else {
		parts = append(parts, "plaintext")
	}
	if s.SASL.Mechanism != None {
		parts = append(parts, fmt.Sprintf("SASL %s as %s", s.SASL.Mechanism, s.SASL.User))
	}
	return strings.Join(parts, ", ")
}

// ReadPassword returns the password, from password_file when it is set.
func (a SASL) ReadPassword() (string, error) {
	if a.PasswordFile == "" {
		return a.Password, nil
	}
	b, err := os.ReadFile(a.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("kafka.sasl.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Config builds the TLS configuration, reading its files, or returns nil without TLS.
func (t TLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.SkipVerify} //nolint:gosec // SkipVerify is the user's explicit, documented choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Kgo returns the franz-go options for the settings.
func (s Settings) Kgo() ([]kgo.Opt, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	tc, err := s.TLS.Config()
	if err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if s.SASL.Mechanism == None {
		return opts, nil
	}
	pw, err := s.SASL.ReadPassword()
	if err != nil {
		return nil, err
	}
	return append(opts, kgo.SASL(mechanism(s.SASL.Mechanism, s.SASL.User, pw))), nil
}

func mechanism(m Mechanism, user, password string) sasl.Mechanism {
	switch m {
	case Plain:
		return plain.Auth{User: user, Pass: password}.AsMechanism()
	case ScramSHA256:
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	default:
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	}
}

// Explain rewords a connection error caused by the settings so that it names the setting to fix;
// other errors come back as they are.
func (s Settings) Explain(err error) error {
	if err == nil {
		return nil
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recordHeader tls.RecordHeaderError
	msg := err.Error()
	switch {
	case errors.As(err, &hostname):
		return fmt.Errorf("kafka.tls: the broker's certificate is not for %q (it names %s); connect by a name the certificate holds, or set kafka.tls.server_name: %w",
			hostname.Host, certNames(hostname.Certificate), err)
	case errors.As(err, &unknownAuthority):
		return fmt.Errorf("kafka.tls.ca_file: the broker's certificate (issued by %q) is not signed by a CA in %s: %w",
			unknownAuthority.Cert.Issuer.CommonName, orSystem(s.TLS.CAFile), err)
	case errors.As(err, &invalid):
		return fmt.Errorf("kafka.tls: the broker's certificate is not valid: %w", err)
	case errors.As(err, &recordHeader), strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Errorf("kafka.tls.enabled: the broker does not speak TLS on this port; turn kafka.tls.enabled off or use its TLS listener: %w", err)
	case s.TLS.Enabled && isTimeout(err):
		return fmt.Errorf("kafka.tls.enabled: the broker did not complete a TLS handshake in time; if this port is not a TLS listener, use the broker's TLS listener or turn TLS off: %w", err)
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return s.AuthFailed(err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return s.MechanismRefused(err)
	}
	return err
}

// AuthFailed is the error of brokers that refused the credentials (err, as the client reported it).
func (s Settings) AuthFailed(err error) error {
	return fmt.Errorf("kafka.sasl: the brokers refused user %q with %s: check kafka.sasl.user and the password: %w", s.SASL.User, s.SASL.Mechanism, err)
}

// MechanismRefused is the error of brokers that do not offer the SASL mechanism.
func (s Settings) MechanismRefused(err error) error {
	return fmt.Errorf("kafka.sasl.mechanism: the brokers do not offer %s: %w", s.SASL.Mechanism, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no name"
	}
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return c.Subject.CommonName
	}
	return strings.Join(names, ", ")
}

func orSystem(caFile string) string {
	if caFile == "" {
		return "the system's roots (set kafka.tls.ca_file)"
	}
	return caFile
}
