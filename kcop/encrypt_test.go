package kcop

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

// TestEncryptDecrypt: short values are RSA-OAEP, long ones hybrid with AES-GCM; both decrypt to the
// source value, and openssl (software cdcd did not write) decrypts the RSA-OAEP form too.
func TestEncryptDecrypt(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "priv.pem")
	pub := filepath.Join(dir, "pub.pem")
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	for _, args := range [][]string{{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", priv}, {"pkey", "-in", priv, "-pubout", "-out", pub}} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	b, _ := os.ReadFile(priv)
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*rsa.PrivateKey)

	enc, err := New("encrypt", NewOptions(map[string]any{"columns": "email,bio", "public_key_file": pub}))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a long biography, ", 100)
	tbl := &change.Table{Schema: "public", Name: "people", Columns: []change.Column{{Name: "id", Key: true}, {Name: "email"}, {Name: "bio"}}, KeyIndexes: []int{0}}
	c := &change.Change{Op: change.Insert, Table: tbl, Txn: &change.Txn{ID: "1"}, After: change.Row{{V: int64(1)}, {V: "ann@example.com"}, {V: long}}}
	out, err := enc.(Transformer).Transform(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if c.After[1].V != "ann@example.com" {
		t.Error("the transform changed the change it was given")
	}
	email, bio := out.After[1].V.(string), out.After[2].V.(string)
	if !strings.HasPrefix(email, "rsa1:") || !strings.HasPrefix(bio, "rsa1g:") {
		t.Fatalf("forms: %.20s… %.20s…", email, bio)
	}
	for want, got := range map[string]string{"ann@example.com": email, long: bio} {
		plain, err := Decrypt(key, got)
		if err != nil || string(plain) != want {
			t.Errorf("Decrypt = %.30q, %v; want %.30q", plain, err, want)
		}
	}
	ct, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(email, "rsa1:"))
	cmd := exec.Command(openssl, "pkeyutl", "-decrypt", "-inkey", priv, "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256")
	cmd.Stdin = bytes.NewReader(ct)
	plain, err := cmd.Output()
	if err != nil || string(plain) != "ann@example.com" {
		t.Errorf("openssl decrypted %q, %v", plain, err)
	}
	if _, err := Decrypt(key, "plain text"); err == nil {
		t.Error("Decrypt took a value that is not encrypted")
	}
	if _, err := New("encrypt", NewOptions(map[string]any{"columns": "email", "public_key_file": filepath.Join(dir, "missing.pem")})); err == nil || !strings.Contains(err.Error(), "public_key_file") {
		t.Errorf("a missing key file: %v", err)
	}
}
