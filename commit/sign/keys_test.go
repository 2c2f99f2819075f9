package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

func pemType(t *testing.T, b []byte) string {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("not PEM: %q", b)
	}
	return block.Type
}

func TestKeygenEachType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind    KeyType
		wantAlg string
	}{
		{"", "ed25519"},
		{KeyEd25519, "ed25519"},
		{KeyECDSAP256, "ecdsa-sha2-256-nistp256"},
		{KeyRSA3072, "rsa-sign-pkcs1-3072-sha256"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			t.Parallel()
			priv, pub, err := Keygen(tt.kind, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := pemType(t, priv); got != "PRIVATE KEY" {
				t.Errorf("private PEM type %q, want PRIVATE KEY (PKCS#8)", got)
			}
			if got := pemType(t, pub); got != "PUBLIC KEY" {
				t.Errorf("public PEM type %q, want PUBLIC KEY", got)
			}
			s, err := ParseSigner(priv, nil)
			if err != nil {
				t.Fatal(err)
			}
			pk, err := ParsePublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyID() != pk.ID() {
				t.Errorf("signer id %s != public key id %s", s.KeyID(), pk.ID())
			}
			if pk.Algorithm() != tt.wantAlg {
				t.Errorf("algorithm %q, want %q", pk.Algorithm(), tt.wantAlg)
			}
			if rk, ok := pk.Key().(*rsa.PublicKey); ok && rk.Size()*8 != 3072 {
				t.Errorf("RSA key of %d bits, want 3072", rk.Size()*8)
			}
		})
	}
	if _, _, err := Keygen("dsa", nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("Keygen(dsa) = %v, want ErrUnsupportedKey", err)
	}
}

func TestParseKeyType(t *testing.T) {
	for _, k := range KeyTypes() {
		got, err := ParseKeyType(string(k))
		if err != nil || got != k {
			t.Errorf("ParseKeyType(%q) = %q, %v", k, got, err)
		}
	}
	if got, err := ParseKeyType(""); err != nil || got != DefaultKeyType {
		t.Errorf("ParseKeyType(\"\") = %q, %v", got, err)
	}
	if _, err := ParseKeyType("rsa-1024"); err == nil {
		t.Error("ParseKeyType(rsa-1024) succeeded")
	}
}

// The key id is the documented SHA-256 of the PKIX DER, independent of how
// the key was obtained, and stable across parses.
func TestKeyIDDeterministic(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	// RFC 8410 SubjectPublicKeyInfo for Ed25519: fixed prefix + raw key.
	spki := append(mustHex(t, "302a300506032b6570032100"), pub...)
	want := sha256.Sum256(spki)

	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != KeyID(want) {
		t.Fatalf("key id %s, want sha256(SPKI) %x", s.KeyID(), want)
	}
	pemBytes := pubPEM(t, pub)
	for range 3 {
		pk, err := ParsePublicKey(pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		if pk.ID() != s.KeyID() {
			t.Fatalf("parsed id %s != %s", pk.ID(), s.KeyID())
		}
	}

	// For other key types, it is the hash of the PEM body (the DER).
	for _, kind := range []string{"ecdsa-p256", "rsa-2048"} {
		s := newSigner(t, kind)
		block, _ := pem.Decode(pubPEM(t, s.PublicKey().Key()))
		if got := KeyID(sha256.Sum256(block.Bytes)); got != s.KeyID() {
			t.Errorf("%s: id %s, want %s", kind, s.KeyID(), got)
		}
	}

	// Signatures carry the id in hex, and it round-trips.
	env := mustSign(t, testPayloadType, testPayload, s)
	if env.Signatures[0].KeyID != s.KeyID().String() {
		t.Errorf("signature keyid %q, want %s", env.Signatures[0].KeyID, s.KeyID())
	}
	id, err := ParseKeyID(s.KeyID().String())
	if err != nil || id != s.KeyID() {
		t.Errorf("ParseKeyID round trip: %s, %v", id, err)
	}
	text, _ := s.KeyID().MarshalText()
	var id2 KeyID
	if err := id2.UnmarshalText(text); err != nil || id2 != s.KeyID() {
		t.Errorf("text round trip: %s, %v", id2, err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseKeyIDRejects(t *testing.T) {
	valid := hex.EncodeToString(make([]byte, 32))
	for _, s := range []string{"", "abcd", valid + "00", valid[:63] + "g", "A" + valid[1:], "SHA256:abc"} {
		if _, err := ParseKeyID(s); err == nil {
			t.Errorf("ParseKeyID(%q) succeeded", s)
		}
	}
}

func TestEncryptedKeyPassword(t *testing.T) {
	t.Parallel()
	pw := []byte("correct horse")
	priv, pub, err := Keygen(KeyEd25519, pw)
	if err != nil {
		t.Fatal(err)
	}
	if got := pemType(t, priv); got != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		t.Fatalf("PEM type %q, want ENCRYPTED SIGSTORE PRIVATE KEY", got)
	}
	pk, err := ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}

	s, err := ParseSigner(priv, StaticPassword(pw))
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if s.KeyID() != pk.ID() {
		t.Errorf("decrypted key id %s != public key id %s", s.KeyID(), pk.ID())
	}

	if _, err := ParseSigner(priv, StaticPassword([]byte("wrong"))); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password: %v, want ErrWrongPassword", err)
	}
	if _, err := ParseSigner(priv, nil); !errors.Is(err, ErrPasswordRequired) {
		t.Errorf("no password func: %v, want ErrPasswordRequired", err)
	}
	errTTY := errors.New("no terminal")
	if _, err := ParseSigner(priv, func() ([]byte, error) { return nil, errTTY }); !errors.Is(err, errTTY) {
		t.Errorf("password func error: %v, want it wrapped", err)
	}

	// A corrupted ciphertext is indistinguishable from a wrong password.
	block, _ := pem.Decode(priv)
	if !bytes.Contains(block.Bytes, []byte(`"ciphertext":"`)) {
		t.Fatalf("unexpected encrypted key layout: %s", block.Bytes)
	}
	block.Bytes = bytes.Replace(block.Bytes, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1)
	if _, err := ParseSigner(pem.EncodeToMemory(block), StaticPassword(pw)); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("corrupted key: %v, want ErrWrongPassword", err)
	}

	// An unencrypted key never asks for a password.
	plain, _, err := Keygen(KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	called := false
	if _, err := ParseSigner(plain, func() ([]byte, error) { called = true; return pw, nil }); err != nil || called {
		t.Errorf("plain key: err %v, password asked %v", err, called)
	}
}

// Keys encrypted by sigstore's own helpers, in both the cosign and sigstore
// PEM flavours, load.
func TestCosignEncryptedKeys(t *testing.T) {
	t.Parallel()
	pw := []byte("cosign-pass")

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, cryptoutils.StaticPasswordFunc(pw))
	if err != nil {
		t.Fatal(err)
	}
	wantID, err := KeyIDOf(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The legacy cosign PEM type (the sigstore type is what Keygen writes,
	// and is covered below and in TestEncryptedKeyPassword).
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED COSIGN PRIVATE KEY", Bytes: der})
	s, err := ParseSigner(pemBytes, StaticPassword(pw))
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != wantID {
		t.Errorf("id %s, want %s", s.KeyID(), wantID)
	}

	// sigstore's key pair generator (what cosign generate-key-pair uses).
	privPEM, pubPEMBytes, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.StaticPasswordFunc(pw))
	if err != nil {
		t.Fatal(err)
	}
	if got := pemType(t, privPEM); got != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		t.Errorf("sigstore generated PEM type %q", got)
	}
	s, err = ParseSigner(privPEM, StaticPassword(pw))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(pubPEMBytes)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != pk.ID() {
		t.Errorf("generated pair: ids %s != %s", s.KeyID(), pk.ID())
	}
	// And the key signs envelopes that verify.
	env := mustSign(t, testPayloadType, testPayload, s)
	if _, _, err := Verify(roundTrip(t, env), testPayloadType, trustOf(t, 1, s)); err != nil {
		t.Fatal(err)
	}
}

func TestRejectWeakAndUnsupportedKeys(t *testing.T) {
	rsa1024 := rsaPrivate(t, 1024)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, priv := range map[string]crypto.Signer{"rsa-1024": rsa1024, "ecdsa-p384": p384, "ecdsa-p224": p224} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewSigner(priv); !errors.Is(err, ErrUnsupportedKey) {
				t.Errorf("NewSigner: %v, want ErrUnsupportedKey", err)
			}
			privPEM, err := cryptoutils.MarshalPrivateKeyToPEM(priv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseSigner(privPEM, nil); !errors.Is(err, ErrUnsupportedKey) {
				t.Errorf("ParseSigner: %v, want ErrUnsupportedKey", err)
			}
			if _, err := ParsePublicKey(pubPEM(t, priv.Public())); !errors.Is(err, ErrUnsupportedKey) {
				t.Errorf("ParsePublicKey: %v, want ErrUnsupportedKey", err)
			}
		})
	}
	// Hand-made invalid keys are refused, not panicked on.
	for name, pub := range map[string]crypto.PublicKey{
		"short ed25519":   ed25519.PublicKey{1, 2, 3},
		"rsa no modulus":  &rsa.PublicKey{E: 65537},
		"ecdsa no curve":  &ecdsa.PublicKey{},
		"ecdsa off curve": &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)},
		"nil":             nil,
		"string":          "key",
	} {
		if _, err := NewPublicKey(pub); !errors.Is(err, ErrInvalidKey) && !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("NewPublicKey(%s) = %v", name, err)
		}
	}
	// RSA 2048 is the smallest RSA key accepted.
	if _, err := NewSigner(rsaPrivate(t, 2048)); err != nil {
		t.Errorf("RSA-2048 rejected: %v", err)
	}
}

func TestParseKeyRejectsMalformed(t *testing.T) {
	plain, pub, err := Keygen(KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8Encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	privCases := map[string][]byte{
		"garbage":          []byte("not a key"),
		"two blocks":       append(append([]byte{}, plain...), plain...),
		"public as priv":   pub,
		"pkcs8 encrypted":  pkcs8Encrypted,
		"bad der":          pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x01}}),
		"trailing garbage": append(append([]byte{}, plain...), "junk"...),
	}
	for name, b := range privCases {
		if _, err := ParseSigner(b, StaticPassword([]byte("x"))); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseSigner(%s) = %v, want ErrInvalidKey", name, err)
		}
	}
	pubCases := map[string][]byte{
		"garbage":     []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
		"two blocks":  append(append([]byte{}, pub...), pub...),
		"private key": plain,
		"empty":       nil,
	}
	for name, b := range pubCases {
		if _, err := ParsePublicKey(b); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParsePublicKey(%s) = %v, want ErrInvalidKey", name, err)
		}
	}
}

func TestWriteKeyPair(t *testing.T) {
	dir := t.TempDir()
	privPEM, pubPEMBytes, err := Keygen(KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(dir, "release")
	keyPath, pubPath, err := WriteKeyPair(prefix, privPEM, pubPEMBytes)
	if err != nil {
		t.Fatal(err)
	}
	if keyPath != prefix+".key" || pubPath != prefix+".pub" {
		t.Errorf("paths %s %s", keyPath, pubPath)
	}
	for p, want := range map[string]struct {
		mode fs.FileMode
		data []byte
	}{keyPath: {0o600, privPEM}, pubPath: {0o644, pubPEMBytes}} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want.mode {
			t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), want.mode)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want.data) {
			t.Errorf("%s content differs (%v)", p, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 2 {
		t.Errorf("directory holds %d entries (%v), want exactly the two key files", len(entries), err)
	}

	// Never overwrite an existing key.
	other, otherPub, err := Keygen(KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteKeyPair(prefix, other, otherPub); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteKeyPair: %v, want fs.ErrExist", err)
	}
	got, _ := os.ReadFile(keyPath)
	if !bytes.Equal(got, privPEM) {
		t.Error("existing private key was overwritten")
	}
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteKeyPair(prefix, other, otherPub); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteKeyPair over an existing .pub: %v, want fs.ErrExist", err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused WriteKeyPair left %s behind", keyPath)
	}
}

// keygen -> files -> load -> sign -> marshal -> parse -> verify with a trust
// store loaded from the directory the key pair was written to.
func TestKeygenFilesSignVerify(t *testing.T) {
	t.Parallel()
	for _, kind := range KeyTypes() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// scrypt is slow (more so under -race): encrypt one key only;
			// TestEncryptedKeyPassword covers encryption itself.
			var pw []byte
			if kind == DefaultKeyType {
				pw = []byte("s3cret")
			}
			privPEM, pubPEMBytes, err := Keygen(kind, pw)
			if err != nil {
				t.Fatal(err)
			}
			keyPath, pubPath, err := WriteKeyPair(filepath.Join(dir, "cfs"), privPEM, pubPEMBytes)
			if err != nil {
				t.Fatal(err)
			}
			s, err := LoadSigner(keyPath, StaticPassword(pw))
			if err != nil {
				t.Fatal(err)
			}
			pk, err := LoadPublicKey(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			env := mustSign(t, testPayloadType, testPayload, s)
			data, err := env.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			envPath := filepath.Join(dir, "commit.dsse.json")
			if err := os.WriteFile(envPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(envPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			parsed, err := ReadEnvelope(f)
			if err != nil {
				t.Fatal(err)
			}
			// The .key file in the same directory is not a *.pub and is ignored.
			trust, err := LoadTrustStore(dir, TrustOptions{})
			if err != nil {
				t.Fatal(err)
			}
			payload, res, err := Verify(parsed, testPayloadType, trust)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(payload, testPayload) {
				t.Errorf("payload %q", payload)
			}
			if len(res.KeyIDs) != 1 || res.KeyIDs[0] != pk.ID() {
				t.Errorf("verified by %v, want [%s]", res.KeyIDs, pk.ID())
			}
		})
	}
}
