package sign

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSignVerifyEachKeyType(t *testing.T) {
	t.Parallel()
	for _, kind := range testKeyKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newSigner(t, kind)
			env := roundTrip(t, mustSign(t, testPayloadType, testPayload, s))
			if len(env.Signatures) != 1 || env.Signatures[0].KeyID != s.KeyID().String() {
				t.Fatalf("signatures %+v", env.Signatures)
			}
			payload, res, err := Verify(env, testPayloadType, trustOf(t, 1, s))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(payload, testPayload) {
				t.Errorf("payload %q", payload)
			}
			if res.PayloadType != testPayloadType || res.Threshold != 1 ||
				!slices.Equal(res.KeyIDs, []KeyID{s.KeyID()}) || len(res.Ignored) != 0 {
				t.Errorf("result %+v", res)
			}
			// The returned payload is a copy.
			payload[0] ^= 1
			if !bytes.Equal(env.Payload, testPayload) {
				t.Error("Verify returned the envelope's own payload slice")
			}
			// Another key of the same type does not verify it.
			other := newSigner(t, kind)
			if kind == "rsa-2048" || kind == "rsa-3072" {
				other = newSigner(t, "ed25519") // RSA keys are cached per size
			}
			_, _, err = Verify(env, testPayloadType, trustOf(t, 1, other))
			wantVerificationError(t, err, ErrUnknownKey, s.KeyID().String())
		})
	}
}

func TestThreshold(t *testing.T) {
	ks := newEd25519Signers(t, 3)
	trust := trustOf(t, 2, ks...)
	if trust.Threshold() != 2 || len(trust.Keys()) != 3 {
		t.Fatalf("trust store: threshold %d, %d keys", trust.Threshold(), len(trust.Keys()))
	}

	// Two of three sign: accepted, both credited.
	env := roundTrip(t, mustSign(t, testPayloadType, testPayload, ks[0], ks[2]))
	_, res, err := Verify(env, testPayloadType, trust)
	if err != nil {
		t.Fatal(err)
	}
	want := []KeyID{ks[0].KeyID(), ks[2].KeyID()}
	slices.SortFunc(want, func(a, b KeyID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(res.KeyIDs, want) {
		t.Errorf("verified by %v, want %v", res.KeyIDs, want)
	}

	// All three: accepted.
	if _, _, err := Verify(roundTrip(t, mustSign(t, testPayloadType, testPayload, ks...)), testPayloadType, trust); err != nil {
		t.Errorf("three of three: %v", err)
	}

	// One: threshold not met, and the message names the one key.
	one := roundTrip(t, mustSign(t, testPayloadType, testPayload, ks[1]))
	_, _, err = Verify(one, testPayloadType, trust)
	wantVerificationError(t, err, ErrThreshold, ks[1].KeyID().String())
	if !strings.Contains(err.Error(), "1 of the required 2") {
		t.Errorf("message %q does not explain the count", err)
	}

	// The same signature twice still counts once.
	dup := roundTrip(t, one)
	dup.Signatures = append(dup.Signatures, dup.Signatures[0])
	_, _, err = Verify(dup, testPayloadType, trust)
	wantVerificationError(t, err, ErrThreshold, ks[1].KeyID().String())

	// One trusted plus one untrusted: threshold not met; the untrusted key
	// is reported as ignored.
	stranger := newSigner(t, "ed25519")
	mixed := roundTrip(t, mustSign(t, testPayloadType, testPayload, ks[0], stranger))
	_, _, err = Verify(mixed, testPayloadType, trust)
	ve := wantVerificationError(t, err, ErrThreshold, ks[0].KeyID().String())
	if !strings.Contains(ve.Detail, stranger.KeyID().String()) {
		t.Errorf("detail %q does not mention the ignored key", ve.Detail)
	}

	if _, err := NewTrustStore([]*PublicKey{ks[0].PublicKey()}, nil, nil, 2); err == nil {
		t.Error("threshold above the number of keys accepted")
	}
	if _, err := NewTrustStore([]*PublicKey{ks[0].PublicKey()}, nil, nil, -1); err == nil {
		t.Error("negative threshold accepted")
	}
	// Duplicate keys do not inflate the key count.
	if _, err := NewTrustStore([]*PublicKey{ks[0].PublicKey(), ks[0].PublicKey()}, nil, nil, 2); err == nil {
		t.Error("one key listed twice satisfied threshold 2")
	}
}

// Key rotation: an envelope dual-signed by the old and the new key verifies
// for a verifier that knows only one of them.
func TestRotationIgnoresUnknownKeys(t *testing.T) {
	oldKey, newKey := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256")
	env := roundTrip(t, mustSign(t, testPayloadType, testPayload, oldKey, newKey))
	for _, trusted := range []*Signer{oldKey, newKey} {
		_, res, err := Verify(env, testPayloadType, trustOf(t, 1, trusted))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.KeyIDs, []KeyID{trusted.KeyID()}) || len(res.Ignored) != 1 {
			t.Errorf("result %+v", res)
		}
	}
}

func TestVerifyFailures(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256")
	trust := trustOf(t, 1, a, b)
	base := mustSign(t, testPayloadType, testPayload, a)
	idA := a.KeyID().String()

	t.Run("tampered payload", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Payload[5] ^= 0x20
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, idA)
	})
	t.Run("appended payload", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Payload = append(env.Payload, ' ')
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, idA)
	})
	t.Run("tampered signature", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Signatures[0].Sig[10] ^= 1
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, idA)
	})
	t.Run("tampered JSON payload", func(t *testing.T) {
		data, err := base.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		env, err := ParseEnvelope(bytes.Replace(data, []byte(`"payload":"ey`), []byte(`"payload":"ez`), 1))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(env.Payload, testPayload) {
			t.Fatal("tampering did not change the payload")
		}
		_, _, err = Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, idA)
	})
	t.Run("flipped payload type", func(t *testing.T) {
		env := roundTrip(t, base)
		env.PayloadType = "application/vnd.cfs.commit.v2+json"
		_, _, err := Verify(env, testPayloadType, trust)
		ve := wantVerificationError(t, err, ErrPayloadType)
		if !strings.Contains(ve.Error(), "v2+json") {
			t.Errorf("message %q does not show the payload type", ve)
		}
		// Even when the verifier expects the flipped type, the signature
		// binds the original one.
		_, _, err = Verify(env, env.PayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, idA)
	})
	t.Run("no signatures", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Signatures = nil
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrNoSignature)
		parsed, err := ParseEnvelope([]byte(`{"payloadType":"` + testPayloadType + `","payload":"","signatures":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Verify(parsed, testPayloadType, trust)
		wantVerificationError(t, err, ErrNoSignature)
	})
	t.Run("unknown key", func(t *testing.T) {
		stranger := newSigner(t, "ed25519")
		env := roundTrip(t, mustSign(t, testPayloadType, testPayload, stranger))
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrUnknownKey, stranger.KeyID().String())
		if !strings.Contains(err.Error(), "not in the trust store") {
			t.Errorf("message %q", err)
		}
	})
	t.Run("signature attributed to another trusted key", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Signatures[0].KeyID = b.KeyID().String()
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, b.KeyID().String())
	})
	t.Run("bad signature poisons a valid one", func(t *testing.T) {
		env := roundTrip(t, mustSign(t, testPayloadType, testPayload, a, b))
		env.Signatures[1].Sig[len(env.Signatures[1].Sig)-1] ^= 1
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrBadSignature, b.KeyID().String())
	})
	t.Run("malformed in-memory envelope", func(t *testing.T) {
		env := roundTrip(t, base)
		env.Signatures[0].Sig = nil
		_, _, err := Verify(env, testPayloadType, trust)
		wantVerificationError(t, err, ErrMalformedEnvelope)
	})
	t.Run("programming errors", func(t *testing.T) {
		if _, _, err := Verify(nil, testPayloadType, trust); err == nil {
			t.Error("nil envelope")
		}
		if _, _, err := Verify(base, testPayloadType, nil); err == nil {
			t.Error("nil trust store")
		}
		if _, _, err := Verify(base, "", trust); err == nil {
			t.Error("empty expected payload type")
		}
	})
}

func TestRevocation(t *testing.T) {
	a, b, c := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256"), newSigner(t, "ed25519")

	dir := t.TempDir()
	trustedDir := filepath.Join(dir, "trusted.d")
	revokedDir := filepath.Join(dir, "revoked.d")
	writePubs(t, trustedDir, a, b, c)
	writePubs(t, revokedDir, b)
	revokedFile := filepath.Join(dir, "revoked.list")
	if err := os.WriteFile(revokedFile, []byte("# compromised 2025-01\n\n"+c.KeyID().String()+"  # laptop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	trust, err := LoadTrustStore(trustedDir, TrustOptions{RevokedDir: revokedDir, RevokedFile: revokedFile})
	if err != nil {
		t.Fatal(err)
	}
	if keys := trust.Keys(); len(keys) != 1 || keys[0].ID() != a.KeyID() {
		t.Fatalf("trusted keys after revocation: %v", keys)
	}
	for _, s := range []*Signer{b, c} {
		if !trust.IsRevoked(s.KeyID()) {
			t.Errorf("key %s not revoked", s.KeyID())
		}
	}
	if trust.IsRevoked(a.KeyID()) {
		t.Error("trusted key reported revoked")
	}

	// Still-trusted key: fine.
	if _, _, err := Verify(roundTrip(t, mustSign(t, testPayloadType, testPayload, a)), testPayloadType, trust); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Signer{"revoked by .pub": b, "revoked by id": c} {
		t.Run(name, func(t *testing.T) {
			id := s.KeyID().String()
			env := roundTrip(t, mustSign(t, testPayloadType, testPayload, s))
			_, _, err := Verify(env, testPayloadType, trust)
			wantVerificationError(t, err, ErrRevokedKey, id)

			// A valid signature by a trusted key does not rescue it.
			both := roundTrip(t, mustSign(t, testPayloadType, testPayload, a, s))
			_, _, err = Verify(both, testPayloadType, trust)
			wantVerificationError(t, err, ErrRevokedKey, id)

			// Without a keyid hint the key is still recognised.
			env.Signatures[0].KeyID = ""
			_, _, err = Verify(env, testPayloadType, trust)
			wantVerificationError(t, err, ErrRevokedKey, id)
		})
	}

	// Merely claiming a revoked key id rejects the envelope.
	claim := roundTrip(t, mustSign(t, testPayloadType, testPayload, a))
	claim.Signatures = append(claim.Signatures, Signature{KeyID: b.KeyID().String(), Sig: []byte{1, 2, 3}})
	_, _, err = Verify(claim, testPayloadType, trust)
	wantVerificationError(t, err, ErrRevokedKey, b.KeyID().String())
}

// The keyid is a hint: signatures without one, or with one in a foreign
// format, are matched by trying the keys.
func TestKeyIDHints(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "rsa-2048")
	trust := trustOf(t, 2, a, b)
	env := roundTrip(t, mustSign(t, testPayloadType, testPayload, a, b))
	env.Signatures[0].KeyID = ""
	env.Signatures[1].KeyID = "SHA256:some-ssh-fingerprint"
	_, res, err := Verify(env, testPayloadType, trust)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.KeyIDs) != 2 {
		t.Errorf("verified by %v", res.KeyIDs)
	}

	// A hintless signature by nobody we know is an unknown key.
	stranger := newSigner(t, "ed25519")
	env = roundTrip(t, mustSign(t, testPayloadType, testPayload, stranger))
	env.Signatures[0].KeyID = ""
	_, _, err = Verify(env, testPayloadType, trustOf(t, 1, a))
	wantVerificationError(t, err, ErrUnknownKey, "(no keyid)")
}
