package sign

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

const testPayloadType = "application/vnd.cfs.commit.v1+json"

var testPayload = []byte(`{"schema":"cfs.commit.v1","image":"0123abcd"}`)

// RSA key generation is slow; each size is generated once per test binary.
var (
	rsaOnce sync.Map // bits -> *rsaKey
)

type rsaKey struct {
	once sync.Once
	key  *rsa.PrivateKey
	err  error
}

func rsaPrivate(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	v, _ := rsaOnce.LoadOrStore(bits, &rsaKey{})
	k := v.(*rsaKey)
	k.once.Do(func() { k.key, k.err = rsa.GenerateKey(rand.Reader, bits) })
	if k.err != nil {
		t.Fatalf("generate RSA-%d: %v", bits, k.err)
	}
	return k.key
}

// testKeyKinds are the allowed key flavours the tests sign with.
var testKeyKinds = []string{"ed25519", "ecdsa-p256", "rsa-2048", "rsa-3072"}

func newPrivate(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	switch kind {
	case "ed25519":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return priv
	case "ecdsa-p256":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return priv
	case "rsa-2048":
		return rsaPrivate(t, 2048)
	case "rsa-3072":
		return rsaPrivate(t, 3072)
	}
	t.Fatalf("unknown key kind %q", kind)
	return nil
}

func newSigner(t testing.TB, kind string) *Signer {
	t.Helper()
	s, err := NewSigner(newPrivate(t, kind))
	if err != nil {
		t.Fatalf("NewSigner(%s): %v", kind, err)
	}
	return s
}

func newEd25519Signers(t testing.TB, n int) []*Signer {
	t.Helper()
	out := make([]*Signer, n)
	for i := range out {
		out[i] = newSigner(t, "ed25519")
	}
	return out
}

func pubPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writePubs writes each signer's public key as <dir>/<name>.pub.
func writePubs(t testing.TB, dir string, signers ...*Signer) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		p := filepath.Join(dir, s.KeyID().String()[:16]+".pub")
		if err := os.WriteFile(p, pubPEM(t, s.PublicKey().Key()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func trustOf(t testing.TB, threshold int, signers ...*Signer) *TrustStore {
	t.Helper()
	keys := make([]*PublicKey, len(signers))
	for i, s := range signers {
		keys[i] = s.PublicKey()
	}
	ts, err := NewTrustStore(keys, nil, nil, threshold)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func mustSign(t testing.TB, payloadType string, payload []byte, signers ...*Signer) *Envelope {
	t.Helper()
	env, err := Sign(context.Background(), payloadType, payload, signers...)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return env
}

// roundTrip marshals and parses env, as a verifier reading it from disk would.
func roundTrip(t testing.TB, env *Envelope) *Envelope {
	t.Helper()
	b, err := env.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	got, err := ParseEnvelope(b)
	if err != nil {
		t.Fatalf("ParseEnvelope: %v", err)
	}
	return got
}

// wantVerificationError checks that err is a *VerificationError with the
// given reason whose message names every key id in ids.
func wantVerificationError(t testing.TB, err error, reason error, ids ...string) *VerificationError {
	t.Helper()
	if err == nil {
		t.Fatalf("verification succeeded, want %v", reason)
	}
	var ve *VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *VerificationError", err, err)
	}
	if !errors.Is(err, reason) {
		t.Fatalf("error %q: reason %v, want %v", err, ve.Reason, reason)
	}
	for _, id := range ids {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("error %q does not name key %s", err, id)
		}
		found := false
		for _, k := range ve.KeyIDs {
			found = found || k == id
		}
		if !found {
			t.Errorf("VerificationError.KeyIDs %v lacks %s", ve.KeyIDs, id)
		}
	}
	return ve
}
