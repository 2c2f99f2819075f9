package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

var (
	testDigest = sha256.Sum256([]byte("composefs image"))
	testCommit = sha256.Sum256([]byte("commit metadata"))
)

func testPayload(rollback uint64) SealedPayload {
	return SealedPayload{ImageDigest: testDigest, CommitID: testCommit, RollbackIndex: rollback}
}

func expectFor(p SealedPayload) Expectation {
	return Expectation{ImageDigest: p.ImageDigest, CommitID: p.CommitID, RollbackIndex: p.RollbackIndex}
}

// enroll enrolls the instance with defaults and checks for leaks.
func enroll(t *testing.T, inst *swtpmInstance) (*Enrollment, *ecdsa.PrivateKey) {
	t.Helper()
	enr, key, err := Enroll(inst.tpm(t), EnrollOpts{})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if key == nil {
		t.Fatal("Enroll generated no policy key")
	}
	assertNoHandles(t, inst.tpm(t), "after Enroll")
	return enr, key
}

// seal seals p with the current PCR 7 and a zero PCR 15.
func seal(t *testing.T, tp transport.TPM, enr *Enrollment, key *ecdsa.PrivateKey, p SealedPayload) []byte {
	t.Helper()
	vals, err := PolicyValues(tp, enr, nil)
	if err != nil {
		t.Fatalf("PolicyValues: %v", err)
	}
	blob, err := Seal(tp, enr, key, p, vals)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	raw, err := blob.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	assertNoHandles(t, tp, "after Seal")
	return raw
}

// wantRefusal asserts err is a verification failure of the given reason
// (and of no other reason), and that nothing leaked.
func wantRefusal(t *testing.T, tp transport.TPM, err error, reason error) {
	t.Helper()
	if err == nil {
		t.Fatalf("want refusal %v, got success", reason)
	}
	if !errors.Is(err, ErrVerification) || !errors.Is(err, reason) {
		t.Fatalf("want %v (a verification failure), got %v", reason, err)
	}
	for _, other := range []error{ErrMalformedBlob, ErrObjectPublic, ErrPolicySignature, ErrSRKMismatch,
		ErrCreationTicket, ErrPCRMismatch, ErrPayloadMismatch, ErrRollback, ErrCounter} {
		if other != reason && errors.Is(err, other) {
			t.Fatalf("refusal %v also matches %v", err, other)
		}
	}
	assertNoHandles(t, tp, "after refusal "+reason.Error())
}

func TestSealUnsealRoundTrip(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)

	// The enrollment survives JSON, and the SRK was persisted.
	js, err := enr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	enr2, err := ParseEnrollment(js)
	if err != nil {
		t.Fatalf("ParseEnrollment: %v\n%s", err, js)
	}
	if enr2.SRKHandle != DefaultSRKHandle || enr2.NVIndex != DefaultNVIndex ||
		enr2.MeasurePCR != DefaultMeasurePCR || len(enr2.PCRs) != 1 || enr2.PCRs[0] != DefaultPCR {
		t.Fatalf("unexpected enrollment defaults: %s", js)
	}
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(DefaultSRKHandle)}.Execute(tp)
	if err != nil {
		t.Fatalf("SRK not persisted: %v", err)
	}
	if !bytes.Equal(rp.Name.Buffer, enr2.SRKName) {
		t.Fatalf("persisted SRK name %x, enrolled %x", rp.Name.Buffer, []byte(enr2.SRKName))
	}

	p := testPayload(0)
	raw := seal(t, tp, enr2, key, p)
	got, err := Unseal(tp, enr2, raw, expectFor(p))
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if *got != p {
		t.Fatalf("unsealed %+v, sealed %+v", *got, p)
	}
	assertNoHandles(t, tp, "after Unseal")

	// A blob can be unsealed again (no latch yet), and round-trips through
	// its serialisation byte for byte.
	if _, err := Unseal(tp, enr2, raw, expectFor(p)); err != nil {
		t.Fatalf("second Unseal before the latch: %v", err)
	}
	parsed, err := ParseSealedBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parsed.MarshalBinary()
	if err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("blob does not round-trip: %v", err)
	}

	// The sealed object's public area is the documented one.
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](parsed.Public)
	if err != nil {
		t.Fatal(err)
	}
	if pub.ObjectAttributes.UserWithAuth || !pub.ObjectAttributes.AdminWithPolicy ||
		!pub.ObjectAttributes.FixedTPM || !pub.ObjectAttributes.FixedParent || !pub.ObjectAttributes.NoDA {
		t.Fatalf("sealed object attributes: %s", describeAttrs(pub.ObjectAttributes))
	}
}

func TestPolicyKeyPEM(t *testing.T) {
	inst := startSWTPM(t)
	enr, key := enroll(t, inst)
	pemBytes, err := EncodePolicyKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePolicyKeyPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(key) {
		t.Fatal("policy key does not round-trip through PEM")
	}
	if !strings.Contains(enr.PolicyKey, "BEGIN PUBLIC KEY") {
		t.Fatalf("enrollment policy key is not a PEM public key: %q", enr.PolicyKey)
	}
	// A different signer than the enrolled key is refused before any TPM
	// work.
	other, _, err := Enroll(startSWTPM(t).tpm(t), EnrollOpts{})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := PolicyValues(inst.tpm(t), enr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(inst.tpm(t), other, key, testPayload(0), vals); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("Seal with a signer that is not the enrolled key: want ErrEnrollment, got %v", err)
	}
}
