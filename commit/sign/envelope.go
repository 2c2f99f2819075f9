package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/sigstore/sigstore/pkg/signature/options"
)

// Limits on envelopes, enforced by [Sign], [Envelope.Marshal] and
// [ParseEnvelope] alike, so that everything signed here parses back.
const (
	// MaxPayloadSize bounds the decoded payload.
	MaxPayloadSize = 4 << 20
	// MaxEnvelopeSize bounds the JSON envelope.
	MaxEnvelopeSize = 8 << 20
	// MaxSignatures bounds the number of signatures in one envelope.
	MaxSignatures = 32
	// MaxPayloadTypeLen bounds the payload type.
	MaxPayloadTypeLen = 256
	// MaxKeyIDLen bounds a signature's keyid hint.
	MaxKeyIDLen = 256
	// maxSigSize bounds one decoded signature (RSA-4096 is 512 bytes).
	maxSigSize = 1024
)

// b64 is the only base64 accepted: standard alphabet, padded, canonical.
var b64 = base64.StdEncoding.Strict()

// Envelope is a DSSE envelope with its payload decoded.
type Envelope struct {
	PayloadType string
	Payload     []byte
	Signatures  []Signature
}

// Signature is one DSSE signature: the raw signature bytes over
// PAE(PayloadType, Payload) and the signer's key id hint (a [KeyID] in hex
// for signatures made here).
type Signature struct {
	KeyID string
	Sig   []byte
}

// PAE returns the DSSE v1 pre-authentication encoding of a payload, the
// byte string that is actually signed.
func PAE(payloadType string, payload []byte) []byte {
	h := paeHeader(payloadType, len(payload))
	out := make([]byte, 0, len(h)+len(payload))
	return append(append(out, h...), payload...)
}

func paeHeader(payloadType string, payloadLen int) []byte {
	h := make([]byte, 0, 32+len(payloadType))
	h = append(h, "DSSEv1 "...)
	h = strconv.AppendInt(h, int64(len(payloadType)), 10)
	h = append(h, ' ')
	h = append(h, payloadType...)
	h = append(h, ' ')
	h = strconv.AppendInt(h, int64(payloadLen), 10)
	return append(h, ' ')
}

// paeReader streams PAE without copying the payload.
func paeReader(payloadType string, payload []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(paeHeader(payloadType, len(payload))), bytes.NewReader(payload))
}

// Sign makes an envelope over payload signed by every signer, in order.
func Sign(ctx context.Context, payloadType string, payload []byte, signers ...*Signer) (*Envelope, error) {
	if len(signers) == 0 {
		return nil, errors.New("sign: no signers")
	}
	env := &Envelope{PayloadType: payloadType, Payload: bytes.Clone(payload)}
	if env.Payload == nil {
		env.Payload = []byte{}
	}
	if err := env.checkHeader(); err != nil {
		return nil, err
	}
	for _, s := range signers {
		if err := env.AddSignature(ctx, s); err != nil {
			return nil, err
		}
	}
	return env, nil
}

// AddSignature signs the envelope's payload with s and appends the
// signature. It refuses a second signature by the same key. The new
// signature is verified before it is added.
func (e *Envelope) AddSignature(ctx context.Context, s *Signer) error {
	if s == nil {
		return errors.New("sign: nil signer")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.checkHeader(); err != nil {
		return err
	}
	if len(e.Signatures) >= MaxSignatures {
		return fmt.Errorf("sign: envelope already has %d signatures (max %d)", len(e.Signatures), MaxSignatures)
	}
	id := s.KeyID().String()
	for _, sig := range e.Signatures {
		if sig.KeyID == id {
			return fmt.Errorf("sign: envelope is already signed by key %s", id)
		}
	}
	raw, err := s.signer.SignMessage(paeReader(e.PayloadType, e.Payload), options.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign with key %s: %w", id, err)
	}
	if len(raw) == 0 || len(raw) > maxSigSize {
		return fmt.Errorf("sign with key %s: signature of %d bytes", id, len(raw))
	}
	if err := s.pub.verify(PAE(e.PayloadType, e.Payload), raw); err != nil {
		return fmt.Errorf("sign with key %s: new signature does not verify: %w", id, err)
	}
	e.Signatures = append(e.Signatures, Signature{KeyID: id, Sig: raw})
	return nil
}

// checkHeader validates the payload type and payload size.
func (e *Envelope) checkHeader() error {
	switch {
	case e.PayloadType == "":
		return fmt.Errorf("%w: empty payloadType", ErrMalformedEnvelope)
	case len(e.PayloadType) > MaxPayloadTypeLen:
		return fmt.Errorf("%w: payloadType longer than %d bytes", ErrMalformedEnvelope, MaxPayloadTypeLen)
	case len(e.Payload) > MaxPayloadSize:
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrMalformedEnvelope, len(e.Payload), MaxPayloadSize)
	}
	return nil
}

// validate checks every limit ParseEnvelope enforces.
func (e *Envelope) validate() error {
	if err := e.checkHeader(); err != nil {
		return err
	}
	if len(e.Signatures) > MaxSignatures {
		return fmt.Errorf("%w: %d signatures exceed %d", ErrMalformedEnvelope, len(e.Signatures), MaxSignatures)
	}
	for i, s := range e.Signatures {
		if len(s.KeyID) > MaxKeyIDLen {
			return fmt.Errorf("%w: signature %d: keyid longer than %d bytes", ErrMalformedEnvelope, i, MaxKeyIDLen)
		}
		if len(s.Sig) == 0 || len(s.Sig) > maxSigSize {
			return fmt.Errorf("%w: signature %d: %d bytes (want 1..%d)", ErrMalformedEnvelope, i, len(s.Sig), maxSigSize)
		}
	}
	return nil
}

type envelopeJSON struct {
	PayloadType string          `json:"payloadType"`
	Payload     string          `json:"payload"`
	Signatures  []signatureJSON `json:"signatures"`
}

type signatureJSON struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// Marshal encodes the envelope as DSSE JSON (deterministically: fixed field
// order, standard padded base64).
func (e *Envelope) Marshal() ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	j := envelopeJSON{
		PayloadType: e.PayloadType,
		Payload:     b64.EncodeToString(e.Payload),
		Signatures:  make([]signatureJSON, 0, len(e.Signatures)),
	}
	for _, s := range e.Signatures {
		j.Signatures = append(j.Signatures, signatureJSON{KeyID: s.KeyID, Sig: b64.EncodeToString(s.Sig)})
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes exceed %d", ErrMalformedEnvelope, len(b), MaxEnvelopeSize)
	}
	return b, nil
}

// MarshalJSON implements json.Marshaler with [Envelope.Marshal].
func (e *Envelope) MarshalJSON() ([]byte, error) { return e.Marshal() }

// UnmarshalJSON implements json.Unmarshaler with the strict rules of
// [ParseEnvelope].
func (e *Envelope) UnmarshalJSON(b []byte) error {
	p, err := ParseEnvelope(b)
	if err != nil {
		return err
	}
	*e = *p
	return nil
}

// ReadEnvelope reads at most MaxEnvelopeSize bytes from r and parses them.
func ReadEnvelope(r io.Reader) (*Envelope, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxEnvelopeSize+1))
	if err != nil {
		return nil, fmt.Errorf("read envelope: %w", err)
	}
	return ParseEnvelope(b)
}

// ParseEnvelope decodes DSSE JSON strictly: an object with exactly the
// (case-sensitive) fields payloadType, payload and signatures, each
// signature an object with sig and an optional keyid; no unknown or
// duplicate fields, no null, no trailing data; strict standard base64; and
// the size limits above. An envelope without signatures parses (and fails
// [Verify] with [ErrNoSignature]). Errors wrap [ErrMalformedEnvelope].
func ParseEnvelope(data []byte) (*Envelope, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformedEnvelope, MaxEnvelopeSize)
	}
	env, err := parseEnvelope(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedEnvelope, err)
	}
	if err := env.validate(); err != nil {
		return nil, err
	}
	return env, nil
}

func parseEnvelope(data []byte) (*Envelope, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	if err := expectDelim(d, '{'); err != nil {
		return nil, err
	}
	env := &Envelope{}
	var haveType, havePayload, haveSigs bool
	for d.More() {
		key, err := readString(d, "field name")
		if err != nil {
			return nil, err
		}
		switch key {
		case "payloadType":
			if haveType {
				return nil, errors.New("duplicate field payloadType")
			}
			haveType = true
			if env.PayloadType, err = readString(d, "payloadType"); err != nil {
				return nil, err
			}
		case "payload":
			if havePayload {
				return nil, errors.New("duplicate field payload")
			}
			havePayload = true
			s, err := readString(d, "payload")
			if err != nil {
				return nil, err
			}
			if b64.DecodedLen(len(s)) > MaxPayloadSize+2 {
				return nil, fmt.Errorf("payload exceeds %d bytes", MaxPayloadSize)
			}
			if env.Payload, err = b64.DecodeString(s); err != nil {
				return nil, fmt.Errorf("payload: %w", err)
			}
		case "signatures":
			if haveSigs {
				return nil, errors.New("duplicate field signatures")
			}
			haveSigs = true
			if env.Signatures, err = readSignatures(d); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown field %q", key)
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the envelope")
	}
	switch {
	case !haveType:
		return nil, errors.New("missing payloadType")
	case !havePayload:
		return nil, errors.New("missing payload")
	case !haveSigs:
		return nil, errors.New("missing signatures")
	}
	return env, nil
}

func readSignatures(d *json.Decoder) ([]Signature, error) {
	if err := expectDelim(d, '['); err != nil {
		return nil, fmt.Errorf("signatures: %w", err)
	}
	sigs := []Signature{}
	for d.More() {
		if len(sigs) == MaxSignatures {
			return nil, fmt.Errorf("more than %d signatures", MaxSignatures)
		}
		i := len(sigs)
		if err := expectDelim(d, '{'); err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		var s Signature
		var haveKeyID, haveSig bool
		for d.More() {
			key, err := readString(d, "field name")
			if err != nil {
				return nil, fmt.Errorf("signature %d: %w", i, err)
			}
			switch key {
			case "keyid":
				if haveKeyID {
					return nil, fmt.Errorf("signature %d: duplicate field keyid", i)
				}
				haveKeyID = true
				if s.KeyID, err = readString(d, "keyid"); err != nil {
					return nil, fmt.Errorf("signature %d: %w", i, err)
				}
				if len(s.KeyID) > MaxKeyIDLen {
					return nil, fmt.Errorf("signature %d: keyid longer than %d bytes", i, MaxKeyIDLen)
				}
			case "sig":
				if haveSig {
					return nil, fmt.Errorf("signature %d: duplicate field sig", i)
				}
				haveSig = true
				str, err := readString(d, "sig")
				if err != nil {
					return nil, fmt.Errorf("signature %d: %w", i, err)
				}
				if b64.DecodedLen(len(str)) > maxSigSize+2 {
					return nil, fmt.Errorf("signature %d: longer than %d bytes", i, maxSigSize)
				}
				if s.Sig, err = b64.DecodeString(str); err != nil {
					return nil, fmt.Errorf("signature %d: sig: %w", i, err)
				}
			default:
				return nil, fmt.Errorf("signature %d: unknown field %q", i, key)
			}
		}
		if err := expectDelim(d, '}'); err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		if !haveSig {
			return nil, fmt.Errorf("signature %d: missing sig", i)
		}
		sigs = append(sigs, s)
	}
	if err := expectDelim(d, ']'); err != nil {
		return nil, fmt.Errorf("signatures: %w", err)
	}
	return sigs, nil
}

func expectDelim(d *json.Decoder, want json.Delim) error {
	tok, err := d.Token()
	if err != nil {
		return unexpectedEOF(err)
	}
	if got, ok := tok.(json.Delim); !ok || got != want {
		return fmt.Errorf("expected %q, found %s", want, describeToken(tok))
	}
	return nil
}

func readString(d *json.Decoder, what string) (string, error) {
	tok, err := d.Token()
	if err != nil {
		return "", unexpectedEOF(err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("%s: expected a string, found %s", what, describeToken(tok))
	}
	return s, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func describeToken(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return strconv.Quote(t.String())
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}
