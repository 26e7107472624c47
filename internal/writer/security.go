package writer

import (
	"context"
	"errors"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/cdcd-dev/cdcd/kafkasec"
)

// SaramaSecurity reads the settings' files once and returns what applies them to any number of
// sarama configurations: the sarama side of kafkasec's one mapping.
func SaramaSecurity(s kafkasec.Settings) (func(*sarama.Config), error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	tc, err := s.TLS.Config()
	if err != nil {
		return nil, err
	}
	pw := ""
	if s.SASL.Mechanism != kafkasec.None {
		if pw, err = s.SASL.ReadPassword(); err != nil {
			return nil, err
		}
	}
	return func(sc *sarama.Config) {
		if tc != nil {
			sc.Net.TLS.Enable, sc.Net.TLS.Config = true, tc
		}
		if s.SASL.Mechanism == kafkasec.None {
			return
		}
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Handshake = true
		sc.Net.SASL.User, sc.Net.SASL.Password = s.SASL.User, pw
		switch s.SASL.Mechanism {
		case kafkasec.Plain:
			sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		case kafkasec.ScramSHA256:
			sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{sha512: false} }
		case kafkasec.ScramSHA512:
			sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{sha512: true} }
		}
	}, nil
}

// ExplainSarama rewords a sarama connection error caused by the settings so that it names the
// setting to fix.
func ExplainSarama(s kafkasec.Settings, err error) error {
	switch {
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed):
		return s.AuthFailed(err)
	case errors.Is(err, sarama.ErrUnsupportedSASLMechanism):
		return s.MechanismRefused(err)
	}
	return s.Explain(err)
}

// scramClient is sarama's SCRAM conversation, spoken by franz-go's SCRAM implementation.
type scramClient struct {
	sha512  bool
	mech    sasl.Mechanism
	session sasl.Session
	done    bool
}

func (c *scramClient) Begin(user, password, _ string) error {
	auth := scram.Auth{User: user, Pass: password}
	c.mech = auth.AsSha256Mechanism()
	if c.sha512 {
		c.mech = auth.AsSha512Mechanism()
	}
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	if c.session == nil {
		session, first, err := c.mech.Authenticate(context.Background(), "")
		if err != nil {
			return "", err
		}
		c.session = session
		return string(first), nil
	}
	done, resp, err := c.session.Challenge([]byte(challenge))
	if err != nil {
		return "", err
	}
	c.done = done
	return string(resp), nil
}

func (c *scramClient) Done() bool { return c.done }
