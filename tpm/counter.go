package tpm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// MaxBlessStep bounds how far one Bless may raise the counter. Every
// increment is an NV write; rollback indices are meant to be small
// integers bumped once per security-relevant release.
const MaxBlessStep = 1024

// counterPublic is the NV public area of the anti-rollback counter before
// its first increment: TPM_NT_COUNTER, 8 bytes, read and incremented with
// the index's own (empty) auth value, noDA. It is owner-created, so only
// owner authorization can undefine it (TPMA_NV_POLICY_DELETE, which would
// stop even the owner, is reserved to platform-created indices).
func counterPublic(index uint32) tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: tpm2.TPMHandle(index),
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			NT:        tpm2.TPMNTCounter,
			AuthWrite: true,
			AuthRead:  true,
			NoDA:      true,
		},
		DataSize: 8,
	}
}

// enrollCounter defines (or keeps) the counter and records its name and
// base in enr.
func enrollCounter(t transport.TPM, enr *Enrollment, opts EnrollOpts) error {
	index := enr.NVIndex
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(t)
	switch {
	case err == nil:
		if prev := opts.Previous; prev != nil && prev.NVIndex == index && bytes.Equal(prev.NVName, rp.NVName.Buffer) {
			enr.NVName = rp.NVName.Buffer
			enr.CounterBase = prev.CounterBase
			return nil
		}
		if !opts.ReplaceCounter {
			return fmt.Errorf("%w: NV index 0x%08x is already defined (name %x); pass the previous enrollment to keep it, or ReplaceCounter to redefine it",
				ErrEnrollment, index, rp.NVName.Buffer)
		}
		_, err := tpm2.NVUndefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(opts.OwnerAuth)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rp.NVName},
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("tpm: undefine NV index 0x%08x: %w", index, err)
		}
	case isHandleMissing(err):
	default:
		return fmt.Errorf("tpm: read NV index 0x%08x: %w", index, err)
	}

	pub := counterPublic(index)
	_, err = tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(opts.OwnerAuth)},
		PublicInfo: tpm2.New2B(pub),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("tpm: define NV counter 0x%08x: %w", index, err)
	}
	// A counter cannot be read before its first increment, which sets it
	// above every counter value this TPM has ever held.
	name, err := nvName(pub)
	if err != nil {
		return err
	}
	if err := incrementCounter(t, index, name); err != nil {
		return err
	}
	pub.Attributes.Written = true
	if name, err = nvName(pub); err != nil {
		return err
	}
	enr.NVName = name
	s, err := loadSRK(t, enr)
	if err != nil {
		return err
	}
	defer s.close()
	raw, err := readCounterRaw(t, s, enr)
	if err != nil {
		return err
	}
	enr.CounterBase = raw
	return nil
}

func nvName(pub tpm2.TPMSNVPublic) ([]byte, error) {
	n, err := tpm2.NVName(&pub)
	if err != nil {
		return nil, fmt.Errorf("tpm: NV name: %w", err)
	}
	return n.Buffer, nil
}

func incrementCounter(t transport.TPM, index uint32, name []byte) error {
	h := tpm2.AuthHandle{
		Handle: tpm2.TPMHandle(index),
		Name:   tpm2.TPM2BName{Buffer: name},
		Auth:   tpm2.PasswordAuth(nil),
	}
	if _, err := (tpm2.NVIncrement{AuthHandle: h, NVIndex: h}).Execute(t); err != nil {
		return fmt.Errorf("tpm: increment NV counter 0x%08x: %w", index, err)
	}
	return nil
}

// checkCounterPublic verifies that the NV index is still the enrolled
// counter: same name (which hashes its attributes and policy), and a
// counter of 8 bytes that has been written.
func checkCounterPublic(t transport.TPM, enr *Enrollment) error {
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(enr.NVIndex)}.Execute(t)
	if err != nil {
		if isHandleMissing(err) {
			return refuse(ErrCounter, fmt.Sprintf("NV index 0x%08x is not defined", enr.NVIndex), enr.NVName, nil, err)
		}
		return fmt.Errorf("tpm: read NV public 0x%08x: %w", enr.NVIndex, err)
	}
	if !bytes.Equal(rp.NVName.Buffer, enr.NVName) {
		return refuse(ErrCounter, fmt.Sprintf("NV index 0x%08x name", enr.NVIndex), enr.NVName, rp.NVName.Buffer, nil)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return fmt.Errorf("tpm: NV public 0x%08x: %w", enr.NVIndex, err)
	}
	// The name already binds these; check them so that a bad enrollment
	// cannot vouch for a non-counter.
	calc, err := nvName(*pub)
	if err != nil {
		return err
	}
	if !bytes.Equal(calc, enr.NVName) || pub.Attributes.NT != tpm2.TPMNTCounter || pub.DataSize != 8 || !pub.Attributes.Written {
		return refuse(ErrCounter, fmt.Sprintf("NV index 0x%08x is not an initialised 8-byte counter", enr.NVIndex), enr.NVName, calc, nil)
	}
	return nil
}

// readCounterRaw reads the counter through an HMAC session salted to the
// enrolled SRK, so the value's response HMAC cannot be forged on the bus.
func readCounterRaw(t transport.TPM, s *srk, enr *Enrollment) (uint64, error) {
	if err := checkCounterPublic(t, enr); err != nil {
		return 0, err
	}
	h := tpm2.AuthHandle{
		Handle: tpm2.TPMHandle(enr.NVIndex),
		Name:   tpm2.TPM2BName{Buffer: enr.NVName},
		Auth:   saltedHMAC(s),
	}
	rsp, err := tpm2.NVRead{AuthHandle: h, NVIndex: h, Size: 8}.Execute(t)
	if err != nil {
		return 0, fmt.Errorf("tpm: read NV counter 0x%08x: %w", enr.NVIndex, err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("tpm: NV counter 0x%08x returned %d bytes", enr.NVIndex, len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// readCounter returns the counter as a rollback index (raw - base).
func readCounter(t transport.TPM, s *srk, enr *Enrollment) (uint64, error) {
	raw, err := readCounterRaw(t, s, enr)
	if err != nil {
		return 0, err
	}
	if raw < enr.CounterBase {
		return 0, refuse(ErrCounter, fmt.Sprintf("NV counter 0x%08x is below its enrolled base", enr.NVIndex),
			u64be(enr.CounterBase), u64be(raw), nil)
	}
	return raw - enr.CounterBase, nil
}

// ReadCounter returns the anti-rollback counter as a rollback index: the
// lowest rollback index Unseal accepts.
func ReadCounter(t transport.TPM, enr *Enrollment) (uint64, error) {
	if err := enr.Validate(); err != nil {
		return 0, err
	}
	s, err := loadSRK(t, enr)
	if err != nil {
		return 0, err
	}
	defer s.close()
	return readCounter(t, s, enr)
}

// Bless raises the anti-rollback counter to rollbackIndex, after the boot
// of a deployment with that index was found good. Counters only go up:
// blessing an index below the counter is a *RollbackError, blessing the
// current value is a no-op, and a step above MaxBlessStep is refused.
func Bless(t transport.TPM, enr *Enrollment, rollbackIndex uint64) error {
	if err := enr.Validate(); err != nil {
		return err
	}
	s, err := loadSRK(t, enr)
	if err != nil {
		return err
	}
	defer s.close()
	cur, err := readCounter(t, s, enr)
	if err != nil {
		return err
	}
	if rollbackIndex < cur {
		return &RollbackError{RollbackIndex: rollbackIndex, Counter: cur, Op: "bless"}
	}
	if rollbackIndex-cur > MaxBlessStep {
		return fmt.Errorf("tpm: bless %d: raising the counter from %d by more than %d at once is refused",
			rollbackIndex, cur, MaxBlessStep)
	}
	for ; cur < rollbackIndex; cur++ {
		if err := incrementCounter(t, enr.NVIndex, enr.NVName); err != nil {
			return err
		}
	}
	got, err := readCounter(t, s, enr)
	if err != nil {
		return err
	}
	if got != rollbackIndex {
		return &VerificationError{Reason: ErrCounter, What: "counter after blessing",
			Expected: fmt.Sprint(rollbackIndex), Actual: fmt.Sprint(got)}
	}
	return nil
}

// saltedHMAC is a one-shot HMAC session salted to the enrolled SRK public
// key: its session key is unknown to anyone without the SRK's private key,
// so response HMACs authenticate what the TPM said.
func saltedHMAC(s *srk, opts ...tpm2.AuthOption) tpm2.Session {
	opts = append([]tpm2.AuthOption{tpm2.Salted(s.handle, s.public)}, opts...)
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
}
