package sign

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

func TestLoadTrustStore(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256")
	dir := filepath.Join(t.TempDir(), "trusted.d")
	writePubs(t, dir, a, b)
	// Other files are ignored.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := LoadTrustStore(dir, TrustOptions{Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	keys := ts.Keys()
	if len(keys) != 2 || ts.Threshold() != 2 {
		t.Fatalf("%d keys, threshold %d", len(keys), ts.Threshold())
	}
	if strings.Compare(keys[0].ID().String(), keys[1].ID().String()) >= 0 {
		t.Error("keys not sorted by id")
	}
	if _, _, err := Verify(mustSign(t, testPayloadType, testPayload, a, b), testPayloadType, ts); err != nil {
		t.Fatal(err)
	}
	if def, err := LoadTrustStore(dir, TrustOptions{}); err != nil || def.Threshold() != 1 {
		t.Errorf("default threshold: %v, %v", def, err)
	}
}

func TestLoadTrustStoreErrors(t *testing.T) {
	a := newSigner(t, "ed25519")
	weak := rsaPrivate(t, 1024)

	setup := func(t *testing.T, files map[string][]byte) string {
		dir := t.TempDir()
		writePubs(t, dir, a)
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	cases := map[string]struct {
		files map[string][]byte
		want  error
	}{
		"garbage .pub":      {map[string][]byte{"bad.pub": []byte("garbage")}, ErrInvalidKey},
		"weak .pub":         {map[string][]byte{"weak.pub": pubPEM(t, weak.Public())}, ErrUnsupportedKey},
		"private key .pub":  {map[string][]byte{"oops.pub": mustPrivPEM(t)}, ErrInvalidKey},
		"two keys in .pub":  {map[string][]byte{"two.pub": append(pubPEM(t, a.PublicKey().Key()), pubPEM(t, a.PublicKey().Key())...)}, ErrInvalidKey},
		"oversized .pub":    {map[string][]byte{"big.pub": make([]byte, maxKeyFileSize+1)}, ErrInvalidKey},
		"empty .pub":        {map[string][]byte{"empty.pub": nil}, ErrInvalidKey},
		"rsa pkcs1 pub key": {map[string][]byte{"pkcs1.pub": cryptoutils.PEMEncode(cryptoutils.PKCS1PublicKeyPEMType, []byte{0x30, 0})}, ErrInvalidKey},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := setup(t, c.files)
			if _, err := LoadTrustStore(dir, TrustOptions{}); !errors.Is(err, c.want) {
				t.Errorf("LoadTrustStore = %v, want %v", err, c.want)
			}
		})
	}

	t.Run("directory named .pub", func(t *testing.T) {
		dir := setup(t, nil)
		if err := os.Mkdir(filepath.Join(dir, "sub.pub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTrustStore(dir, TrustOptions{}); err == nil {
			t.Error("directory named *.pub accepted")
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		if _, err := LoadTrustStore(t.TempDir(), TrustOptions{}); err == nil {
			t.Error("empty trust directory accepted")
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		if _, err := LoadTrustStore(filepath.Join(t.TempDir(), "nope"), TrustOptions{}); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing directory: %v", err)
		}
	})
	t.Run("threshold above key count", func(t *testing.T) {
		if _, err := LoadTrustStore(setup(t, nil), TrustOptions{Threshold: 2}); err == nil {
			t.Error("threshold 2 with one key accepted")
		}
	})
	t.Run("missing revocation sources", func(t *testing.T) {
		dir := setup(t, nil)
		missing := filepath.Join(dir, "missing")
		if _, err := LoadTrustStore(dir, TrustOptions{RevokedDir: missing}); err == nil {
			t.Error("missing revoked dir accepted")
		}
		if _, err := LoadTrustStore(dir, TrustOptions{RevokedFile: missing}); err == nil {
			t.Error("missing revoked file accepted")
		}
	})
	t.Run("bad revoked list line", func(t *testing.T) {
		dir := setup(t, nil)
		list := filepath.Join(t.TempDir(), "revoked")
		if err := os.WriteFile(list, []byte(a.KeyID().String()+"\nnot-an-id\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadTrustStore(dir, TrustOptions{RevokedFile: list})
		if err == nil || !strings.Contains(err.Error(), ":2:") {
			t.Errorf("bad revoked line: %v (want an error naming line 2)", err)
		}
	})
	t.Run("bad revoked .pub", func(t *testing.T) {
		dir := setup(t, nil)
		rdir := t.TempDir()
		if err := os.WriteFile(filepath.Join(rdir, "x.pub"), []byte("garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTrustStore(dir, TrustOptions{RevokedDir: rdir}); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("bad revoked key: %v", err)
		}
	})
	t.Run("every trusted key revoked", func(t *testing.T) {
		dir := setup(t, nil)
		rdir := t.TempDir()
		writePubs(t, rdir, a)
		if _, err := LoadTrustStore(dir, TrustOptions{RevokedDir: rdir}); err == nil {
			t.Error("trust store without usable keys accepted")
		}
	})
}

// A weak key can still be revoked: the revoked directory accepts any
// parseable key and records its id.
func TestRevokedWeakKey(t *testing.T) {
	a := newSigner(t, "ed25519")
	weak := rsaPrivate(t, 1024)
	dir, rdir := t.TempDir(), t.TempDir()
	writePubs(t, dir, a)
	if err := os.WriteFile(filepath.Join(rdir, "weak.pub"), pubPEM(t, weak.Public()), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := LoadTrustStore(dir, TrustOptions{RevokedDir: rdir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := KeyIDOf(weak.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !ts.IsRevoked(id) || len(ts.RevokedIDs()) != 1 {
		t.Errorf("weak key not revoked: %v", ts.RevokedIDs())
	}
	env := roundTrip(t, mustSign(t, testPayloadType, testPayload, a))
	env.Signatures = append(env.Signatures, Signature{KeyID: id.String(), Sig: []byte{1}})
	_, _, err = Verify(env, testPayloadType, ts)
	wantVerificationError(t, err, ErrRevokedKey, id.String())
}

func mustPrivPEM(t *testing.T) []byte {
	t.Helper()
	priv, _, err := Keygen(KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}
