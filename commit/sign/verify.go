package sign

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// VerifyResult describes a successful verification.
type VerifyResult struct {
	// PayloadType is the verified payload type.
	PayloadType string
	// KeyIDs are the distinct trusted keys with a valid signature, sorted.
	KeyIDs []KeyID
	// Ignored holds the keyid hints of signatures by keys outside the trust
	// store, which did not count.
	Ignored []string
	// Threshold is the trust store's threshold that was met.
	Threshold int
}

type sigStatus int

const (
	sigValid sigStatus = iota
	sigBad
	sigRevoked
	sigUnknown
)

// Verify checks env against trust and returns its payload when every rule
// of the package documentation holds: payload type equal to
// wantPayloadType, at least one signature, no signature by (or claiming) a
// revoked key, no invalid signature attributed to a trusted key, and at
// least trust.Threshold() distinct trusted keys with valid signatures.
// Every security failure is a [*VerificationError]; errors.Is matches its
// reason.
func Verify(env *Envelope, wantPayloadType string, trust *TrustStore) (payload []byte, result *VerifyResult, err error) {
	if env == nil {
		return nil, nil, errors.New("verify: nil envelope")
	}
	if trust == nil {
		return nil, nil, errors.New("verify: nil trust store")
	}
	if wantPayloadType == "" {
		return nil, nil, errors.New("verify: expected payload type must be given")
	}
	if env.PayloadType != wantPayloadType {
		return nil, nil, &VerificationError{
			Reason: ErrPayloadType,
			Detail: fmt.Sprintf("envelope has %q, want %q", env.PayloadType, wantPayloadType),
		}
	}
	if len(env.Signatures) == 0 {
		return nil, nil, &VerificationError{Reason: ErrNoSignature}
	}
	if err := env.validate(); err != nil {
		return nil, nil, &VerificationError{Reason: ErrMalformedEnvelope, Detail: err.Error()}
	}

	pae := PAE(env.PayloadType, env.Payload)
	var revoked, bad, unknown []string
	valid := map[KeyID]bool{}
	for _, s := range env.Signatures {
		st, id := trust.classify(s, pae)
		switch st {
		case sigValid:
			valid[id] = true
		case sigBad:
			bad = appendUnique(bad, id.String())
		case sigRevoked:
			revoked = appendUnique(revoked, id.String())
		case sigUnknown:
			unknown = appendUnique(unknown, hintLabel(s.KeyID))
		}
	}

	validIDs := make([]KeyID, 0, len(valid))
	for id := range valid {
		validIDs = append(validIDs, id)
	}
	slices.SortFunc(validIDs, func(a, b KeyID) int { return bytes.Compare(a[:], b[:]) })

	switch {
	case len(revoked) > 0:
		return nil, nil, &VerificationError{Reason: ErrRevokedKey, KeyIDs: revoked,
			Detail: "an envelope carrying a revoked key's signature is rejected as a whole"}
	case len(bad) > 0:
		return nil, nil, &VerificationError{Reason: ErrBadSignature, KeyIDs: bad,
			Detail: "signature does not match the payload for the named trusted key"}
	case len(validIDs) == 0:
		return nil, nil, &VerificationError{Reason: ErrUnknownKey, KeyIDs: unknown,
			Detail: fmt.Sprintf("%d signature(s), none by the %d trusted key(s)", len(env.Signatures), len(trust.trusted))}
	case len(validIDs) < trust.threshold:
		ids := keyIDStrings(validIDs)
		detail := fmt.Sprintf("%d of the required %d distinct trusted keys signed", len(validIDs), trust.threshold)
		if len(unknown) > 0 {
			detail += fmt.Sprintf("; ignored signatures by untrusted keys %v", unknown)
		}
		return nil, nil, &VerificationError{Reason: ErrThreshold, KeyIDs: ids, Detail: detail}
	}
	return bytes.Clone(env.Payload), &VerifyResult{
		PayloadType: env.PayloadType,
		KeyIDs:      validIDs,
		Ignored:     unknown,
		Threshold:   trust.threshold,
	}, nil
}

// classify decides what one signature is. A keyid hint that parses as a
// KeyID of a revoked key makes it revoked without further ado; one naming a
// trusted key means only that key is tried. Otherwise (no hint, a foreign
// hint, or an unknown id) every revoked and then every trusted key is tried.
func (t *TrustStore) classify(s Signature, pae []byte) (sigStatus, KeyID) {
	if id, err := ParseKeyID(s.KeyID); err == nil {
		if t.IsRevoked(id) {
			return sigRevoked, id
		}
		if k := t.lookup(id); k != nil {
			if k.verify(pae, s.Sig) == nil {
				return sigValid, k.id
			}
			return sigBad, k.id
		}
	}
	for _, k := range t.revokedKeys {
		if k.verify(pae, s.Sig) == nil {
			return sigRevoked, k.id
		}
	}
	for _, k := range t.trusted {
		if k.verify(pae, s.Sig) == nil {
			return sigValid, k.id
		}
	}
	return sigUnknown, KeyID{}
}

// hintLabel renders an untrusted keyid hint for messages.
func hintLabel(h string) string {
	if h == "" {
		return "(no keyid)"
	}
	if _, err := ParseKeyID(h); err == nil {
		return h
	}
	return strconv.Quote(h)
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func keyIDStrings(ids []KeyID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
