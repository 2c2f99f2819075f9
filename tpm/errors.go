package tpm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrNoTPM reports that no TPM is reachable: the device node does not exist
// or the emulator does not answer. Callers in "if-present" mode branch on it.
var ErrNoTPM = errors.New("tpm: no TPM available")

// ErrVerification is the class of every refusal by Unseal (and by Bless and
// the counter checks): the TPM answered, but what it holds or says does not
// match what was enrolled or expected. It is distinct from I/O and protocol
// errors so that security checks fail closed and the caller can say what
// was wrong. Each refusal also matches one of the reason sentinels below.
var ErrVerification = errors.New("tpm: verification failed")

// Reasons for a refusal; each *VerificationError, *PCRMismatchError and
// *RollbackError matches ErrVerification and exactly one of these.
var (
	// ErrMalformedBlob: the sealed blob does not parse (bad magic, version,
	// lengths, trailing bytes, non-canonical TPM structures).
	ErrMalformedBlob = errors.New("tpm: malformed sealed blob")
	// ErrObjectPublic: the sealed object's public area is not what cfs
	// creates (type, attributes, nameAlg, authPolicy, scheme).
	ErrObjectPublic = errors.New("tpm: sealed object public area rejected")
	// ErrPolicySignature: the PCR policy signature does not verify against
	// the enrolled policy key (in software or in the TPM).
	ErrPolicySignature = errors.New("tpm: PCR policy signature invalid")
	// ErrSRKMismatch: the TPM's storage root key is not the enrolled one
	// (another TPM, a cleared TPM, or an emulator).
	ErrSRKMismatch = errors.New("tpm: storage root key differs from the enrolled one")
	// ErrCreationTicket: TPM2_CertifyCreation refused the creation ticket,
	// or the creation data does not belong to the object and parent.
	ErrCreationTicket = errors.New("tpm: creation ticket cannot be certified")
	// ErrPCRMismatch: the current PCR values are not the ones the signed
	// policy expects.
	ErrPCRMismatch = errors.New("tpm: PCR values do not satisfy the sealed policy")
	// ErrPayloadMismatch: the unsealed payload differs from the expected
	// (signed) image digest, commit or rollback index.
	ErrPayloadMismatch = errors.New("tpm: unsealed payload differs from the expected values")
	// ErrRollback: the rollback index is below the TPM anti-rollback
	// counter, or Bless would lower the counter.
	ErrRollback = errors.New("tpm: rollback index below the anti-rollback counter")
	// ErrCounter: the anti-rollback NV counter is missing or is not the
	// enrolled index (redefined with other attributes).
	ErrCounter = errors.New("tpm: anti-rollback counter missing or redefined")
	// ErrEnrollment: the enrollment record is unusable (missing fields,
	// unsupported version, policy key not P-256).
	ErrEnrollment = errors.New("tpm: invalid enrollment")
)

// VerificationError is a refusal with the reason, the thing checked, and
// the expected and actual values (hex for binary values).
type VerificationError struct {
	Reason   error  // one of the reason sentinels (ErrObjectPublic, ...)
	What     string // what was compared, e.g. "authPolicy", "image digest"
	Expected string
	Actual   string
	Err      error // underlying error (e.g. the TPM response code), or nil
}

func (e *VerificationError) Error() string {
	var b strings.Builder
	b.WriteString(e.Reason.Error())
	if e.What != "" {
		b.WriteString(": ")
		b.WriteString(e.What)
	}
	if e.Expected != "" || e.Actual != "" {
		fmt.Fprintf(&b, ": expected %s, got %s", orNone(e.Expected), orNone(e.Actual))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is matches ErrVerification and the reason sentinel.
func (e *VerificationError) Is(target error) bool {
	return target == ErrVerification || target == e.Reason
}

// Unwrap returns the underlying error.
func (e *VerificationError) Unwrap() error { return e.Err }

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func refuse(reason error, what string, expected, actual []byte, err error) *VerificationError {
	return &VerificationError{
		Reason:   reason,
		What:     what,
		Expected: hex.EncodeToString(expected),
		Actual:   hex.EncodeToString(actual),
		Err:      err,
	}
}

// PCRMismatch is one PCR whose current value differs from the value the
// signed policy expects.
type PCRMismatch struct {
	PCR      int
	Expected []byte
	Actual   []byte
}

// PCRMismatchError reports which PCRs (SHA-256 bank) differ from the policy.
// When the TPM refused the policy but every PCR read back as expected (a
// race with an extend, or a lying bus), Mismatches is empty and Err holds the
// TPM's answer.
type PCRMismatchError struct {
	Mismatches []PCRMismatch
	Err        error
}

func (e *PCRMismatchError) Error() string {
	var b strings.Builder
	b.WriteString(ErrPCRMismatch.Error())
	for _, m := range e.Mismatches {
		fmt.Fprintf(&b, "; PCR %d (sha256): expected %x, current %x", m.PCR, m.Expected, m.Actual)
	}
	if len(e.Mismatches) == 0 {
		b.WriteString("; every PCR reads back as expected")
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is matches ErrVerification and ErrPCRMismatch.
func (e *PCRMismatchError) Is(target error) bool {
	return target == ErrVerification || target == ErrPCRMismatch
}

// Unwrap returns the TPM's error.
func (e *PCRMismatchError) Unwrap() error { return e.Err }

// RollbackError reports a rollback index below the anti-rollback counter
// (on Unseal), or an attempt to lower the counter (on Bless).
type RollbackError struct {
	RollbackIndex uint64
	Counter       uint64
	Op            string // "unseal" or "bless"
}

func (e *RollbackError) Error() string {
	if e.Op == "bless" {
		return fmt.Sprintf("%v: cannot bless rollback index %d, the counter is already at %d (counters only go up)",
			ErrRollback, e.RollbackIndex, e.Counter)
	}
	return fmt.Sprintf("%v: sealed rollback index %d is below the TPM counter %d", ErrRollback, e.RollbackIndex, e.Counter)
}

// Is matches ErrVerification and ErrRollback.
func (e *RollbackError) Is(target error) bool {
	return target == ErrVerification || target == ErrRollback
}
