package kcop

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("encrypt", NewEncrypt)
	Document("encrypt",
		OptionDoc{"columns", "list of strings", "", "the columns whose values are encrypted"},
		OptionDoc{"public_key_file", "path", "", "a PEM RSA public key (PKIX or PKCS#1), 2048 bits or more"})
}

// The two forms of an encrypted value, both text:
//
//	rsa1:<base64 RSA-OAEP(SHA-256) of the value>                     when the value fits RSA-OAEP
//	rsa1g:<base64 RSA-OAEP of a fresh AES-256 key>:<base64 nonce+AES-GCM ciphertext>   otherwise
//
// The value encrypted is the column's text form (as the csv-audit KCOP writes it), or the bytes
// themselves for a binary column. Decrypt reverses both.
const (
	encDirect = "rsa1:"
	encHybrid = "rsa1g:"
)

// Encrypt replaces the values of some columns with their encryption under an RSA public key, so
// that only the holder of the private key can read them (Decrypt). NULL stays NULL.
type Encrypt struct {
	columns columnSet
	key     *rsa.PublicKey
	cache   tableCache[[]int]
}

// NewEncrypt is the Factory of the encrypt KCOP.
func NewEncrypt(opts Options) (KCOP, error) {
	var o struct {
		Columns       []string `mapstructure:"columns"`
		PublicKeyFile string   `mapstructure:"public_key_file"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Columns) == 0 || o.PublicKeyFile == "" {
		return nil, fmt.Errorf("options columns and public_key_file are required")
	}
	b, err := os.ReadFile(o.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("option public_key_file: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("option public_key_file: %s holds no PEM block", o.PublicKeyFile)
	}
	var pub any
	if pub, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		if pub, err = x509.ParsePKCS1PublicKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("option public_key_file: %s holds no RSA public key (%v)", o.PublicKeyFile, err)
		}
	}
	key, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("option public_key_file: %s holds a %T, not an RSA key", o.PublicKeyFile, pub)
	}
	if key.N.BitLen() < 2048 {
		return nil, fmt.Errorf("option public_key_file: the key has %d bits; use 2048 or more", key.N.BitLen())
	}
	return &Encrypt{columns: o.Columns, key: key}, nil
}

// Process implements KCOP; a transform writes nothing of its own.
func (e *Encrypt) Process(_ context.Context, _ *change.Change, dst []Record) ([]Record, error) {
	return dst, nil
}

// Transform implements Transformer.
func (e *Encrypt) Transform(_ context.Context, c *change.Change) (*change.Change, error) {
	return replaceValues(c, &e.cache, e.columns, func(v change.Value) (any, error) {
		var plain []byte
		switch x := v.V.(type) {
		case []byte:
			plain = x
		default:
			if !renderable(x) {
				return nil, fmt.Errorf("encrypt: cannot encrypt a value of Go type %T", x)
			}
			plain = []byte(csvText(x))
		}
		return encryptValue(e.key, plain)
	})
}

func encryptValue(key *rsa.PublicKey, plain []byte) (string, error) {
	if len(plain) <= key.Size()-2*sha256.Size-2 {
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, key, plain, nil)
		if err != nil {
			return "", err
		}
		return encDirect + base64.StdEncoding.EncodeToString(ct), nil
	}
	aesKey := make([]byte, 32)
	if _, err := rand.Read(aesKey); err != nil {
		return "", err
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, key, aesKey, nil)
	if err != nil {
		return "", err
	}
	return encHybrid + base64.StdEncoding.EncodeToString(wrapped) + ":" + base64.StdEncoding.EncodeToString(gcm.Seal(nonce, nonce, plain, nil)), nil
}

// Decrypt returns the value an encrypt KCOP encrypted: the column's text form, or its bytes for a
// binary column.
func Decrypt(key *rsa.PrivateKey, value string) ([]byte, error) {
	switch {
	case strings.HasPrefix(value, encDirect):
		ct, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(value, encDirect))
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		return rsa.DecryptOAEP(sha256.New(), nil, key, ct, nil)
	case strings.HasPrefix(value, encHybrid):
		wrapped64, sealed64, ok := strings.Cut(strings.TrimPrefix(value, encHybrid), ":")
		if !ok {
			return nil, errors.New("decrypt: a hybrid value lacks its ciphertext")
		}
		wrapped, err := base64.StdEncoding.DecodeString(wrapped64)
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		sealed, err := base64.StdEncoding.DecodeString(sealed64)
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		aesKey, err := rsa.DecryptOAEP(sha256.New(), nil, key, wrapped, nil)
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", err)
		}
		block, err := aes.NewCipher(aesKey)
		if err != nil {
			return nil, err
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		if len(sealed) < gcm.NonceSize() {
			return nil, errors.New("decrypt: the ciphertext is too short")
		}
		return gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
	}
	return nil, errors.New("decrypt: not a value of the encrypt KCOP (rsa1: or rsa1g:)")
}
