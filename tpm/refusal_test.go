package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// forge creates, the way an attacker with access to the TPM can, an object
// under the public SRK with a public template and data of their choosing,
// and packages it with a (legitimately signed, reusable) PCR policy.
func forge(t *testing.T, tp transport.TPM, enr *Enrollment, pub tpm2.TPMTPublic, data []byte, policy SignedPolicy) (*SealedBlob, tpm2.TPM2BPrivate) {
	t.Helper()
	s, err := loadSRK(tp, enr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: data}),
		}},
		InPublic: tpm2.New2B(pub),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("attacker's TPM2_Create: %v", err)
	}
	cd, err := rsp.CreationData.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return &SealedBlob{
		Public:         rsp.OutPublic.Bytes(),
		Private:        rsp.OutPrivate.Buffer,
		CreationData:   tpm2.Marshal(*cd),
		CreationHash:   rsp.CreationHash.Buffer,
		CreationTicket: tpm2.Marshal(rsp.CreationTicket),
		Policy:         policy,
	}, rsp.OutPrivate
}

func mustMarshal(t *testing.T, b *SealedBlob) []byte {
	t.Helper()
	raw, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustParse(t *testing.T, raw []byte) *SealedBlob {
	t.Helper()
	b, err := ParseSealedBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRefuseForgedEmptyPolicy(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	good := mustParse(t, seal(t, tp, enr, key, p))

	evil := testPayload(0)
	evil.ImageDigest = sha256.Sum256([]byte("attacker's image"))

	// The classic forgery: no policy, userWithAuth with an empty password.
	// The TPM happily releases it to anyone...
	open := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
	forged, priv := forge(t, tp, enr, open, evil.marshal(), good.Policy)
	if out := attackerUnseal(t, tp, enr, forged, priv); !bytes.Equal(out, evil.marshal()) {
		t.Fatalf("the TPM should release the forged payload to the attacker: got %x", out)
	}
	// ...but Unseal refuses it on its public area.
	_, err := Unseal(tp, enr, mustMarshal(t, forged), expectFor(evil))
	wantRefusal(t, tp, err, ErrObjectPublic)
	if !strings.Contains(err.Error(), "userWithAuth") {
		t.Errorf("refusal should name the attributes: %v", err)
	}

	// Same, with the exact cfs attributes but an empty authPolicy.
	exact := open
	exact.ObjectAttributes = sealedAttributes
	forged, _ = forge(t, tp, enr, exact, evil.marshal(), good.Policy)
	_, err = Unseal(tp, enr, mustMarshal(t, forged), expectFor(evil))
	wantRefusal(t, tp, err, ErrObjectPublic)
	want, _ := authPolicy(enr.PolicyKeyName)
	if !strings.Contains(err.Error(), "authPolicy") || !strings.Contains(err.Error(), hex.EncodeToString(want)) {
		t.Errorf("refusal should name authPolicy and the expected digest: %v", err)
	}
}

// attackerUnseal unseals a userWithAuth object with an empty password.
func attackerUnseal(t *testing.T, tp transport.TPM, enr *Enrollment, b *SealedBlob, priv tpm2.TPM2BPrivate) []byte {
	t.Helper()
	s, err := loadSRK(tp, enr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	l, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    priv,
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tp, l.ObjectHandle)
	u, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: l.ObjectHandle, Name: l.Name, Auth: tpm2.PasswordAuth(nil)}}.Execute(tp)
	if err != nil {
		t.Fatalf("attacker unseal: %v", err)
	}
	return u.OutData.Buffer
}

// An attacker can mint an object with the right attributes and the right
// authPolicy (the SRK and the policy key's name are public), holding a
// digest of their choosing. Its creation ticket certifies (the TPM did
// create it under this SRK), and the signed PCR policy is reusable, so the
// TPM unseals it. What stops it is the final comparison with the digest
// from the signed commit metadata.
func TestRefuseForgedRightPolicyWrongDigest(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	good := mustParse(t, seal(t, tp, enr, key, p))

	evil := testPayload(0)
	evil.ImageDigest = sha256.Sum256([]byte("attacker's image"))
	ap, err := authPolicy(enr.PolicyKeyName)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := forge(t, tp, enr, sealedPublic(ap), evil.marshal(), good.Policy)
	raw := mustMarshal(t, forged)

	// Unsealed against the attacker's own digest, every TPM check passes:
	// the TPM is not an authority for content.
	got, err := Unseal(tp, enr, raw, expectFor(evil))
	if err != nil {
		t.Fatalf("the forged object passes every TPM check (as it should): %v", err)
	}
	if got.ImageDigest != evil.ImageDigest {
		t.Fatalf("unsealed %x", got.ImageDigest)
	}
	// Against the signed digest the caller actually expects: refused,
	// naming both digests.
	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrPayloadMismatch)
	var ve *VerificationError
	if !errors.As(err, &ve) || ve.What != "image digest" ||
		ve.Expected != hex.EncodeToString(p.ImageDigest[:]) || ve.Actual != hex.EncodeToString(evil.ImageDigest[:]) {
		t.Fatalf("refusal should name expected and actual digests: %#v", err)
	}
	// Wrong commit and wrong rollback index are refused the same way.
	e := expectFor(evil)
	e.CommitID[0] ^= 1
	_, err = Unseal(tp, enr, raw, e)
	wantRefusal(t, tp, err, ErrPayloadMismatch)
	if !errors.As(err, &ve) || ve.What != "commit id" {
		t.Fatalf("want a commit id mismatch, got %v", err)
	}
	e = expectFor(evil)
	e.RollbackIndex = 9
	_, err = Unseal(tp, enr, raw, e)
	wantRefusal(t, tp, err, ErrPayloadMismatch)
	if !errors.As(err, &ve) || ve.What != "rollback index" {
		t.Fatalf("want a rollback index mismatch, got %v", err)
	}
}

func TestRefuseCreationTicket(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	a := mustParse(t, seal(t, tp, enr, key, p))
	b := mustParse(t, seal(t, tp, enr, key, p))

	// A's object with B's ticket: the ticket's HMAC binds B's name.
	swapped := *a
	swapped.CreationTicket = b.CreationTicket
	_, err := Unseal(tp, enr, mustMarshal(t, &swapped), expectFor(p))
	wantRefusal(t, tp, err, ErrCreationTicket)
	if !strings.Contains(err.Error(), "CertifyCreation") {
		t.Errorf("refusal should come from TPM2_CertifyCreation: %v", err)
	}

	// A's object with B's whole creation record (data, hash and ticket are
	// consistent with each other, but not with A's object).
	swapped.CreationData, swapped.CreationHash = b.CreationData, b.CreationHash
	_, err = Unseal(tp, enr, mustMarshal(t, &swapped), expectFor(p))
	wantRefusal(t, tp, err, ErrCreationTicket)

	// A ticket whose HMAC was tampered with.
	tk, err := tpm2.Unmarshal[tpm2.TPMTTKCreation](a.CreationTicket)
	if err != nil {
		t.Fatal(err)
	}
	tk.Digest.Buffer[0] ^= 0x80
	bad := *a
	bad.CreationTicket = tpm2.Marshal(*tk)
	_, err = Unseal(tp, enr, mustMarshal(t, &bad), expectFor(p))
	wantRefusal(t, tp, err, ErrCreationTicket)

	// Creation data that does not hash to the creation hash.
	bad = *a
	bad.CreationHash = bytes.Clone(a.CreationHash)
	bad.CreationHash[5] ^= 1
	_, err = Unseal(tp, enr, mustMarshal(t, &bad), expectFor(p))
	wantRefusal(t, tp, err, ErrCreationTicket)
}

func TestRefusePCR7Changed(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	raw := seal(t, tp, enr, key, p)

	before, err := ReadPCRs(tp, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	ext := sha256.Sum256([]byte("new db entry"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 7, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: ext[:]}}},
	}).Execute(tp); err != nil {
		t.Fatalf("extend PCR 7: %v", err)
	}
	h := sha256.New()
	h.Write(before[7])
	h.Write(ext[:])
	after := h.Sum(nil)

	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrPCRMismatch)
	var pe *PCRMismatchError
	if !errors.As(err, &pe) || len(pe.Mismatches) != 1 {
		t.Fatalf("want one PCR mismatch, got %v", err)
	}
	m := pe.Mismatches[0]
	if m.PCR != 7 || !bytes.Equal(m.Expected, before[7]) || !bytes.Equal(m.Actual, after) {
		t.Fatalf("mismatch %+v, want PCR 7 expected %x actual %x", m, before[7], after)
	}
	if !strings.Contains(err.Error(), "PCR 7") || !strings.Contains(err.Error(), hex.EncodeToString(after)) {
		t.Errorf("message should name PCR 7 and the current value: %v", err)
	}

	// A new signature for the new PCR 7 value re-enables the same sealed
	// object without re-sealing it (what a dbx update needs).
	vals, err := PolicyValues(tp, enr, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := SignPolicy(enr, key, vals)
	if err != nil {
		t.Fatal(err)
	}
	b := mustParse(t, raw)
	b.Policy = *pol
	if _, err := Unseal(tp, enr, mustMarshal(t, b), expectFor(p)); err != nil {
		t.Fatalf("unseal with a re-signed policy: %v", err)
	}
	assertNoHandles(t, tp, "after re-signed unseal")
}

func TestRefuseOtherTPM(t *testing.T) {
	a := startSWTPM(t)
	b := startSWTPM(t)
	enrA, key := enroll(t, a)
	p := testPayload(0)
	raw := seal(t, a.tpm(t), enrA, key, p)

	// A's enrollment on TPM B: B's SRK is another key.
	_, err := Unseal(b.tpm(t), enrA, raw, expectFor(p))
	wantRefusal(t, b.tpm(t), err, ErrSRKMismatch)
	if !strings.Contains(err.Error(), hex.EncodeToString(enrA.SRKName)) {
		t.Errorf("refusal should name the enrolled SRK: %v", err)
	}

	// B enrolled with the same policy key: the blob passes the public-area
	// and signature checks but names A's SRK as its parent.
	enrB, _, err := Enroll(b.tpm(t), EnrollOpts{PolicyKey: &key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Unseal(b.tpm(t), enrB, raw, expectFor(p))
	wantRefusal(t, b.tpm(t), err, ErrCreationTicket)

	// And A's blob with its creation data rewritten to name B's SRK cannot
	// be loaded: the private area is bound to A's SRK.
	blob := mustParse(t, raw)
	cd, err := tpm2.Unmarshal[tpm2.TPMSCreationData](blob.CreationData)
	if err != nil {
		t.Fatal(err)
	}
	cd.ParentName = tpm2.TPM2BName{Buffer: enrB.SRKName}
	blob.CreationData = tpm2.Marshal(*cd)
	sum := sha256.Sum256(blob.CreationData)
	blob.CreationHash = sum[:]
	_, err = Unseal(b.tpm(t), enrB, mustMarshal(t, blob), expectFor(p))
	wantRefusal(t, b.tpm(t), err, ErrMalformedBlob)
}

func TestRefuseRollback(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	old := testPayload(2)
	cur := testPayload(5)
	rawOld := seal(t, tp, enr, key, old)
	rawCur := seal(t, tp, enr, key, cur)

	if _, err := Unseal(tp, enr, rawOld, expectFor(old)); err != nil {
		t.Fatalf("index 2 with counter 0: %v", err)
	}
	if err := Bless(tp, enr, 5); err != nil {
		t.Fatalf("Bless(5): %v", err)
	}
	assertNoHandles(t, tp, "after Bless")
	_, err := Unseal(tp, enr, rawOld, expectFor(old))
	wantRefusal(t, tp, err, ErrRollback)
	var re *RollbackError
	if !errors.As(err, &re) || re.RollbackIndex != 2 || re.Counter != 5 {
		t.Fatalf("want rollback index 2 below counter 5, got %v", err)
	}
	if _, err := Unseal(tp, enr, rawCur, expectFor(cur)); err != nil {
		t.Fatalf("index 5 with counter 5: %v", err)
	}
	e := expectFor(cur)
	e.MinRollbackIndex = 6
	_, err = Unseal(tp, enr, rawCur, e)
	wantRefusal(t, tp, err, ErrRollback)
}

// The TPM verifies the policy signature itself too: with the software
// check out of the way, TPM2_VerifySignature refuses a bad signature and a
// signature by another key, and PolicyAuthorize refuses an approved policy
// that is not the session's.
func TestTPMVerifiesPolicySignature(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	blob := mustParse(t, seal(t, tp, enr, key, p))

	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := PolicyValues(tp, enr, nil)
	if err != nil {
		t.Fatal(err)
	}
	// SignPolicy checks the signer against the enrollment; forge with an
	// enrollment naming the attacker's key, then use the real one.
	fake := *enr
	fakeEnr, _, err := Enroll(startSWTPM(t).tpm(t), EnrollOpts{PolicyKey: &attacker.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	fake.PolicyKey, fake.PolicyKeyName = fakeEnr.PolicyKey, fakeEnr.PolicyKeyName
	attackerPolicy, err := SignPolicy(&fake, attacker, vals)
	if err != nil {
		t.Fatal(err)
	}
	flipped := blob.Policy
	flipped.S = bytes.Clone(flipped.S)
	flipped.S[31] ^= 1

	for name, pol := range map[string]SignedPolicy{"flipped": flipped, "other key": *attackerPolicy} {
		t.Run(name, func(t *testing.T) {
			approved, err := pol.ApprovedPolicy()
			if err != nil {
				t.Fatal(err)
			}
			err = withLoaded(t, tp, enr, blob, func(s *srk, obj tpm2.NamedHandle) error {
				_, err := unsealWithPolicy(tp, enr, s, obj, &pol, approved)
				return err
			})
			wantRefusal(t, tp, err, ErrPolicySignature)
			if !strings.Contains(err.Error(), "VerifySignature") {
				t.Fatalf("want the TPM's VerifySignature to refuse, got %v", err)
			}
			// Through Unseal, the software check refuses first.
			b := *blob
			b.Policy = pol
			_, err = Unseal(tp, enr, mustMarshal(t, &b), expectFor(p))
			wantRefusal(t, tp, err, ErrPolicySignature)
			if !strings.Contains(err.Error(), "software") {
				t.Fatalf("want the software check to refuse, got %v", err)
			}
		})
	}

	// A valid signature over a different approved policy than the one the
	// session reached: PolicyAuthorize refuses.
	other := map[int][]byte{7: make([]byte, 32), 15: make([]byte, 32)}
	other[7][0] = 1
	pol, err := SignPolicy(enr, key, other)
	if err != nil {
		t.Fatal(err)
	}
	approved, _ := pol.ApprovedPolicy()
	err = withLoaded(t, tp, enr, blob, func(s *srk, obj tpm2.NamedHandle) error {
		// Run PolicyPCR for the blob's (true) values but authorize the
		// other approved digest.
		mixed := blob.Policy
		mixed.R, mixed.S = pol.R, pol.S
		_, err := unsealWithPolicy(tp, enr, s, obj, &mixed, approved)
		return err
	})
	wantRefusal(t, tp, err, ErrPolicySignature)
	if !strings.Contains(err.Error(), "PolicyAuthorize") {
		t.Fatalf("want PolicyAuthorize to refuse, got %v", err)
	}
}

// withLoaded loads a blob's object under the SRK for internal tests.
func withLoaded(t *testing.T, tp transport.TPM, enr *Enrollment, b *SealedBlob, f func(*srk, tpm2.NamedHandle) error) error {
	t.Helper()
	s, err := loadSRK(tp, enr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	l, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tp, l.ObjectHandle)
	return f(s, tpm2.NamedHandle{Handle: l.ObjectHandle, Name: l.Name})
}

func TestRefuseMalformedBlob(t *testing.T) {
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	raw := seal(t, tp, enr, key, p)

	// Every truncation is a parse error.
	for n := 0; n < len(raw); n++ {
		if _, err := ParseSealedBlob(raw[:n]); !errors.Is(err, ErrMalformedBlob) {
			t.Fatalf("truncated to %d bytes: want ErrMalformedBlob, got %v", n, err)
		}
	}
	if _, err := ParseSealedBlob(append(bytes.Clone(raw), 0)); !errors.Is(err, ErrMalformedBlob) {
		t.Fatalf("trailing byte: want ErrMalformedBlob, got %v", err)
	}
	_, err := Unseal(tp, enr, raw[:len(raw)/2], expectFor(p))
	wantRefusal(t, tp, err, ErrMalformedBlob)

	// Every single-bit flip anywhere in the blob is refused as a
	// verification failure (never unsealed, never another kind of error).
	// Flips inside the private area all meet the same integrity check in
	// TPM2_Load; sample those to keep the test fast.
	blob := mustParse(t, raw)
	privStart := len(blobMagic) + 2 + 2 + len(blob.Public) + 2
	privEnd := privStart + len(blob.Private)
	reasons := map[string]int{}
	for i := range raw {
		if i >= privStart+8 && i < privEnd-8 && i%8 != 0 {
			continue
		}
		bad := bytes.Clone(raw)
		bad[i] ^= 0x01
		_, err := Unseal(tp, enr, bad, expectFor(p))
		if err == nil {
			t.Fatalf("flip at byte %d unsealed", i)
		}
		if !errors.Is(err, ErrVerification) {
			t.Fatalf("flip at byte %d: want a verification failure, got %v", i, err)
		}
		for _, r := range []error{ErrMalformedBlob, ErrObjectPublic, ErrPolicySignature, ErrCreationTicket, ErrPCRMismatch} {
			if errors.Is(err, r) {
				reasons[r.Error()]++
			}
		}
	}
	assertNoHandles(t, tp, "after bit flips")
	// The flips exercise every layer of checks.
	for _, r := range []error{ErrMalformedBlob, ErrObjectPublic, ErrPolicySignature, ErrCreationTicket} {
		if reasons[r.Error()] == 0 {
			t.Errorf("no flip was caught as %v (got %v)", r, reasons)
		}
	}
	t.Logf("refusals by reason over the flips of a %d-byte blob: %v", len(raw), reasons)
}
