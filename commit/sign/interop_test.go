package sign

import (
	"bytes"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

// Envelopes made by sigstore's DSSE wrappers verify here.
func TestVerifySigstoreEnvelopes(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256")

	// WrapSigner: one signature, no keyid.
	single, err := sigdsse.WrapSigner(a.signer, testPayloadType).SignMessage(bytes.NewReader(testPayload))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(single)
	if err != nil {
		t.Fatalf("sigstore envelope rejected: %v\n%s", err, single)
	}
	payload, res, err := Verify(env, testPayloadType, trustOf(t, 1, a, b))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, testPayload) || len(res.KeyIDs) != 1 || res.KeyIDs[0] != a.KeyID() {
		t.Errorf("payload %q, result %+v", payload, res)
	}

	// WrapMultiSigner: two signatures with SSH-fingerprint keyids.
	multi, err := sigdsse.WrapMultiSigner(testPayloadType, a.signer, b.signer).SignMessage(bytes.NewReader(testPayload))
	if err != nil {
		t.Fatal(err)
	}
	env, err = ParseEnvelope(multi)
	if err != nil {
		t.Fatalf("sigstore multi envelope rejected: %v\n%s", err, multi)
	}
	if _, res, err = Verify(env, testPayloadType, trustOf(t, 2, a, b)); err != nil || len(res.KeyIDs) != 2 {
		t.Fatalf("multi: %+v, %v", res, err)
	}
	// Wrong payload type is still caught (sigstore's multi verifier would not).
	_, _, err = Verify(env, "application/other", trustOf(t, 2, a, b))
	wantVerificationError(t, err, ErrPayloadType)
}

// Envelopes made here verify with sigstore's DSSE verifier wrappers once
// their keyids are cleared (go-securesystemslib compares keyids against its
// own SSH-fingerprint ids).
func TestSigstoreVerifiesOurEnvelopes(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "rsa-2048")
	env := mustSign(t, testPayloadType, testPayload, a, b)
	for i := range env.Signatures {
		env.Signatures[i].KeyID = ""
	}
	data, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	va, err := signature.LoadVerifierFromAlgorithmDetails(a.PublicKey().Key(), a.PublicKey().details)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := signature.LoadVerifierFromAlgorithmDetails(b.PublicKey().Key(), b.PublicKey().details)
	if err != nil {
		t.Fatal(err)
	}
	if err := sigdsse.WrapVerifier(va).VerifySignature(bytes.NewReader(data), nil); err != nil {
		t.Errorf("sigstore WrapVerifier: %v", err)
	}
	if err := sigdsse.WrapMultiVerifier(testPayloadType, 2, va, vb).VerifySignature(bytes.NewReader(data), nil); err != nil {
		t.Errorf("sigstore WrapMultiVerifier (2 of 2): %v", err)
	}
	// And a tampered one fails there too, so the check above is meaningful.
	env.Payload[0] ^= 1
	bad, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := sigdsse.WrapVerifier(va).VerifySignature(bytes.NewReader(bad), nil); err == nil {
		t.Error("sigstore accepted a tampered envelope")
	}
}
