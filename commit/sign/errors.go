package sign

import (
	"errors"
	"strings"
)

// Key errors.
var (
	// ErrInvalidKey means a key file could not be decoded.
	ErrInvalidKey = errors.New("invalid key")
	// ErrUnsupportedKey means a key decoded but its algorithm or size is not
	// on the allowlist (see the package documentation).
	ErrUnsupportedKey = errors.New("unsupported or weak key")
	// ErrPasswordRequired means the private key is encrypted and no password
	// function was given.
	ErrPasswordRequired = errors.New("private key is encrypted and no password was given")
	// ErrWrongPassword means the password does not decrypt the private key.
	// Authenticated encryption cannot tell a wrong password from a corrupted
	// key file, so both give this error.
	ErrWrongPassword = errors.New("wrong password for encrypted private key (or corrupted key file)")
)

// ErrMalformedEnvelope means an envelope is not well-formed DSSE JSON within
// this package's limits.
var ErrMalformedEnvelope = errors.New("malformed DSSE envelope")

// Verification failure reasons, carried by [VerificationError.Reason].
var (
	// ErrPayloadType means the envelope's payload type is not the expected one.
	ErrPayloadType = errors.New("payload type mismatch")
	// ErrNoSignature means the envelope carries no signature.
	ErrNoSignature = errors.New("envelope has no signatures")
	// ErrUnknownKey means every signature is by a key outside the trust store.
	ErrUnknownKey = errors.New("signed only by keys not in the trust store")
	// ErrBadSignature means a signature attributed to a trusted key does not
	// verify.
	ErrBadSignature = errors.New("invalid signature")
	// ErrRevokedKey means a signature is by (or claims) a revoked key.
	ErrRevokedKey = errors.New("signed by a revoked key")
	// ErrThreshold means fewer distinct trusted keys than the threshold signed.
	ErrThreshold = errors.New("not enough trusted signatures")
)

// VerificationError is returned by [Verify] for every security failure, as
// opposed to programming errors. Reason is one of the sentinels above and is
// what errors.Is matches; KeyIDs are the keys concerned (hex key ids, or the
// envelope's keyid hints for keys outside the trust store).
type VerificationError struct {
	Reason error
	KeyIDs []string
	Detail string
}

func (e *VerificationError) Error() string {
	var b strings.Builder
	b.WriteString("signature verification failed: ")
	if e.Reason != nil {
		b.WriteString(e.Reason.Error())
	} else {
		b.WriteString("unknown reason")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if len(e.KeyIDs) > 0 {
		b.WriteString(" (keys: ")
		b.WriteString(strings.Join(e.KeyIDs, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the reason, so errors.Is(err, ErrRevokedKey) works.
func (e *VerificationError) Unwrap() error { return e.Reason }
