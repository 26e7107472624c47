package kafkasec

import (
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

const password = "pa55-W0rd-never-logged"

// TestExplainSASL: the brokers' own refusals, as each client reports them, name the setting. (The
// in-process broker hangs up on a wrong password instead of answering; the real cluster's answer is
// tested end to end.)
func TestExplainSASL(t *testing.T) {
	s := Settings{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: ScramSHA512, User: "cdcd", Password: password}}
	for _, err := range []error{kerr.SaslAuthenticationFailed} {
		if got := s.Explain(err); !strings.Contains(got.Error(), `kafka.sasl: the brokers refused user "cdcd" with SCRAM-SHA-512`) || !errors.Is(got, err) {
			t.Errorf("%v: %v", err, got)
		}
	}
	for _, err := range []error{kerr.UnsupportedSaslMechanism} {
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
