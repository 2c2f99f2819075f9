package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

func TestPAE(t *testing.T) {
	// The example from the DSSE protocol specification.
	if got := string(PAE("http://example.com/HelloWorld", []byte("hello world"))); got != "DSSEv1 29 http://example.com/HelloWorld 11 hello world" {
		t.Errorf("PAE = %q", got)
	}
	// Same bytes as go-securesystemslib's reference implementation.
	cases := []struct {
		typ     string
		payload []byte
	}{
		{testPayloadType, testPayload},
		{"t", nil},
		{"", []byte("x")},
		{"ünï cødé", []byte{0, 1, 2, 255, ' ', '\n'}},
		{testPayloadType, bytes.Repeat([]byte("0123456789"), 1000)},
	}
	for _, c := range cases {
		want := ssldsse.PAE(c.typ, c.payload)
		if got := PAE(c.typ, c.payload); !bytes.Equal(got, want) {
			t.Errorf("PAE(%q, %d bytes) = %q, want %q", c.typ, len(c.payload), got, want)
		}
		var streamed bytes.Buffer
		if _, err := streamed.ReadFrom(paeReader(c.typ, c.payload)); err != nil || !bytes.Equal(streamed.Bytes(), want) {
			t.Errorf("paeReader(%q) differs (%v)", c.typ, err)
		}
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	signers := []*Signer{newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256"), newSigner(t, "rsa-2048")}
	env := mustSign(t, testPayloadType, testPayload, signers...)
	b1, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The JSON is plain DSSE.
	var generic map[string]any
	if err := json.Unmarshal(b1, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic) != 3 || generic["payloadType"] != testPayloadType ||
		generic["payload"] != base64.StdEncoding.EncodeToString(testPayload) {
		t.Errorf("unexpected JSON %s", b1)
	}
	sigs, _ := generic["signatures"].([]any)
	if len(sigs) != len(signers) {
		t.Fatalf("%d signatures in JSON, want %d", len(sigs), len(signers))
	}
	for i, s := range sigs {
		m := s.(map[string]any)
		if m["keyid"] != signers[i].KeyID().String() {
			t.Errorf("signature %d keyid %v, want %s", i, m["keyid"], signers[i].KeyID())
		}
	}

	got, err := ParseEnvelope(b1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, env) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, env)
	}
	b2, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Errorf("marshal is not deterministic:\n%s\n%s", b1, b2)
	}

	// Embedded in another document, the strict parser is used too.
	var doc struct {
		Env *Envelope `json:"env"`
	}
	if err := json.Unmarshal([]byte(`{"env":`+string(b1)+`}`), &doc); err != nil || !reflect.DeepEqual(doc.Env, env) {
		t.Errorf("embedded round trip: %v", err)
	}
	bad := strings.Replace(string(b1), `"payload":`, `"extra":1,"payload":`, 1)
	if err := json.Unmarshal([]byte(`{"env":`+bad+`}`), &doc); !errors.Is(err, ErrMalformedEnvelope) {
		t.Errorf("embedded envelope with unknown field: %v", err)
	}
	out, err := json.Marshal(doc)
	if err != nil || !strings.Contains(string(out), `"payloadType"`) {
		t.Errorf("json.Marshal of embedded envelope: %s, %v", out, err)
	}
}

func TestParseEnvelopeRejects(t *testing.T) {
	s := newSigner(t, "ed25519")
	valid, err := mustSign(t, testPayloadType, testPayload, s).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEnvelope(valid); err != nil {
		t.Fatalf("valid envelope rejected: %v", err)
	}
	sig := `{"keyid":"","sig":"AAAA"}`
	p := base64.StdEncoding.EncodeToString(testPayload)
	obj := func(fields string) string { return "{" + fields + "}" }
	ok := obj(`"payloadType":"t","payload":"` + p + `","signatures":[` + sig + `]`)
	if _, err := ParseEnvelope([]byte(ok)); err != nil {
		t.Fatalf("hand-written envelope rejected: %v", err)
	}
	if env, err := ParseEnvelope([]byte(obj(`"payloadType":"t","payload":"","signatures":[{"sig":"AAAA"}]`))); err != nil ||
		len(env.Payload) != 0 || env.Signatures[0].KeyID != "" {
		t.Fatalf("empty payload / absent keyid: %+v, %v", env, err)
	}

	many := make([]string, MaxSignatures+1)
	for i := range many {
		many[i] = sig
	}
	cases := map[string]string{
		"empty":               "",
		"garbage":             "garbage",
		"array":               "[]",
		"null":                "null",
		"unknown field":       obj(`"payloadType":"t","payload":"","signatures":[],"x":1`),
		"duplicate field":     obj(`"payloadType":"t","payloadType":"u","payload":"","signatures":[]`),
		"case variant":        obj(`"PayloadType":"t","payload":"","signatures":[]`),
		"missing payloadType": obj(`"payload":"","signatures":[]`),
		"missing payload":     obj(`"payloadType":"t","signatures":[]`),
		"missing signatures":  obj(`"payloadType":"t","payload":""`),
		"null signatures":     obj(`"payloadType":"t","payload":"","signatures":null`),
		"empty payloadType":   obj(`"payloadType":"","payload":"","signatures":[]`),
		"number payloadType":  obj(`"payloadType":1,"payload":"","signatures":[]`),
		"urlsafe base64":      obj(`"payloadType":"t","payload":"-_-_","signatures":[]`),
		"unpadded base64":     obj(`"payloadType":"t","payload":"YQ","signatures":[]`),
		"non-canonical b64":   obj(`"payloadType":"t","payload":"YR==","signatures":[]`),
		"trailing data":       ok + "x",
		"second object":       ok + ok,
		"sig unknown field":   obj(`"payloadType":"t","payload":"","signatures":[{"sig":"AAAA","x":""}]`),
		"sig duplicate":       obj(`"payloadType":"t","payload":"","signatures":[{"sig":"AAAA","sig":"AAAA"}]`),
		"sig missing":         obj(`"payloadType":"t","payload":"","signatures":[{"keyid":"a"}]`),
		"sig empty":           obj(`"payloadType":"t","payload":"","signatures":[{"sig":""}]`),
		"sig too long":        obj(`"payloadType":"t","payload":"","signatures":[{"sig":"` + strings.Repeat("A", 2000) + `"}]`),
		"keyid number":        obj(`"payloadType":"t","payload":"","signatures":[{"keyid":1,"sig":"AAAA"}]`),
		"keyid too long":      obj(`"payloadType":"t","payload":"","signatures":[{"keyid":"` + strings.Repeat("a", MaxKeyIDLen+1) + `","sig":"AAAA"}]`),
		"signature not obj":   obj(`"payloadType":"t","payload":"","signatures":["AAAA"]`),
		"too many signatures": obj(`"payloadType":"t","payload":"","signatures":[` + strings.Join(many, ",") + `]`),
		"trailing comma":      obj(`"payloadType":"t","payload":"","signatures":[],`),
		"payloadType too long": obj(`"payloadType":"` + strings.Repeat("t", MaxPayloadTypeLen+1) +
			`","payload":"","signatures":[]`),
		"oversized": obj(`"payloadType":"t","payload":"` + strings.Repeat("A", MaxEnvelopeSize) + `","signatures":[]`),
		"payload too large": obj(`"payloadType":"t","payload":"` +
			base64.StdEncoding.EncodeToString(make([]byte, MaxPayloadSize+3)) + `","signatures":[]`),
	}
	for name, in := range cases {
		if env, err := ParseEnvelope([]byte(in)); !errors.Is(err, ErrMalformedEnvelope) {
			t.Errorf("%s: ParseEnvelope = %+v, %v; want ErrMalformedEnvelope", name, env, err)
		}
	}

	// Every truncation of a valid envelope is rejected.
	for n := range len(valid) {
		if _, err := ParseEnvelope(valid[:n]); !errors.Is(err, ErrMalformedEnvelope) {
			t.Fatalf("truncated to %d bytes: %v, want ErrMalformedEnvelope", n, err)
		}
	}
	if _, err := ReadEnvelope(strings.NewReader(string(valid[:len(valid)/2]))); !errors.Is(err, ErrMalformedEnvelope) {
		t.Errorf("ReadEnvelope of a truncated envelope: %v", err)
	}
}

func TestSignRejects(t *testing.T) {
	s := newSigner(t, "ed25519")
	ctx := context.Background()
	if _, err := Sign(ctx, testPayloadType, testPayload); err == nil {
		t.Error("Sign without signers succeeded")
	}
	if _, err := Sign(ctx, "", testPayload, s); !errors.Is(err, ErrMalformedEnvelope) {
		t.Errorf("empty payload type: %v", err)
	}
	if _, err := Sign(ctx, testPayloadType, make([]byte, MaxPayloadSize+1), s); !errors.Is(err, ErrMalformedEnvelope) {
		t.Errorf("oversized payload: %v", err)
	}
	if _, err := Sign(ctx, testPayloadType, testPayload, s, s); err == nil {
		t.Error("two signatures by one key accepted")
	}
	if _, err := Sign(ctx, testPayloadType, testPayload, s, nil); err == nil {
		t.Error("nil signer accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Sign(cancelled, testPayloadType, testPayload, s); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	// An empty payload is fine and round-trips.
	env := mustSign(t, testPayloadType, nil, s)
	payload, _, err := Verify(roundTrip(t, env), testPayloadType, trustOf(t, 1, s))
	if err != nil || len(payload) != 0 {
		t.Errorf("empty payload: %q, %v", payload, err)
	}
	// Sign copies the payload.
	buf := append([]byte{}, testPayload...)
	env = mustSign(t, testPayloadType, buf, s)
	buf[0] ^= 1
	if _, _, err := Verify(env, testPayloadType, trustOf(t, 1, s)); err != nil {
		t.Errorf("mutating the caller's buffer broke the envelope: %v", err)
	}
}

func TestAddSignature(t *testing.T) {
	a, b := newSigner(t, "ed25519"), newSigner(t, "ecdsa-p256")
	env := roundTrip(t, mustSign(t, testPayloadType, testPayload, a))
	trust := trustOf(t, 2, a, b)
	_, _, err := Verify(env, testPayloadType, trust)
	wantVerificationError(t, err, ErrThreshold, a.KeyID().String())

	if err := env.AddSignature(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := env.AddSignature(context.Background(), a); err == nil {
		t.Error("second signature by the same key accepted")
	}
	_, res, err := Verify(roundTrip(t, env), testPayloadType, trust)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.KeyIDs) != 2 {
		t.Errorf("verified by %v, want both keys", res.KeyIDs)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	s := newSigner(f, "ed25519")
	valid, err := mustSign(f, testPayloadType, testPayload, s).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"payloadType":"t","payload":"","signatures":[]}`))
	f.Add([]byte(`{"payloadType":"t","payload":"YQ==","signatures":[{"keyid":"k","sig":"AAAA"}]}`))
	f.Add([]byte(`{"payloadType":"t"`))
	f.Add([]byte(`[1,2,{"a":null}]`))
	trust := trustOf(f, 1, s)
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvelope(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedEnvelope) {
				t.Fatalf("error %v does not wrap ErrMalformedEnvelope", err)
			}
			return
		}
		out, err := env.Marshal()
		if err != nil {
			t.Fatalf("parsed envelope does not marshal: %v", err)
		}
		again, err := ParseEnvelope(out)
		if err != nil || !reflect.DeepEqual(again, env) {
			t.Fatalf("re-parse differs: %v", err)
		}
		// Whatever parses, verification either succeeds with the real
		// payload or fails closed with a typed error.
		payload, _, err := Verify(env, testPayloadType, trust)
		if err == nil {
			if !bytes.Equal(payload, testPayload) {
				t.Fatalf("verified a forged payload %q", payload)
			}
			return
		}
		var ve *VerificationError
		if !errors.As(err, &ve) {
			t.Fatalf("untyped verification error %v", err)
		}
	})
}
