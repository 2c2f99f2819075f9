package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// sealedAttributes are the exact attributes of a cfs sealed object:
// bound to this TPM and parent, authorized only through its policy
// (adminWithPolicy, no userWithAuth), exempt from dictionary-attack
// lockout (a policy failure at boot must not lock the TPM out).
var sealedAttributes = tpm2.TPMAObject{
	FixedTPM:        true,
	FixedParent:     true,
	AdminWithPolicy: true,
	NoDA:            true,
}

// outsideInfo tags the creation data of cfs sealed objects.
var outsideInfo = []byte("cfs-root sealed payload v1")

// sealedPublic is the public template of a sealed object with authPolicy.
func sealedPublic(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: sealedAttributes,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

// Seal creates the sealed object for one deployment: payload under the
// enrolled SRK, with authPolicy PolicyAuthorize(policy key, PolicyRef),
// and a PCR policy over pcrValues signed by policyKey (see SignPolicy for
// what pcrValues must hold). The sensitive payload travels to the TPM
// encrypted under a session salted to the enrolled SRK.
func Seal(t transport.TPM, enr *Enrollment, policyKey crypto.Signer, secret SealedPayload, pcrValues map[int][]byte) (*SealedBlob, error) {
	policy, err := SignPolicy(enr, policyKey, pcrValues)
	if err != nil {
		return nil, err
	}
	ap, err := authPolicy(enr.PolicyKeyName)
	if err != nil {
		return nil, err
	}
	s, err := loadSRK(t, enr)
	if err != nil {
		return nil, err
	}
	defer s.close()

	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: s.handle,
			Name:   s.name,
			Auth:   saltedHMAC(s, tpm2.AESEncryption(128, tpm2.EncryptIn)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret.marshal()}),
		}},
		InPublic:    tpm2.New2B(sealedPublic(ap)),
		OutsideInfo: tpm2.TPM2BData{Buffer: outsideInfo},
		CreationPCR: pcrSelection(enr.PCRs),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: create sealed object: %w", err)
	}
	cdata, err := rsp.CreationData.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: creation data: %w", err)
	}
	return &SealedBlob{
		Public:         rsp.OutPublic.Bytes(),
		Private:        rsp.OutPrivate.Buffer,
		CreationData:   tpm2.Marshal(*cdata),
		CreationHash:   rsp.CreationHash.Buffer,
		CreationTicket: tpm2.Marshal(rsp.CreationTicket),
		Policy:         *policy,
	}, nil
}

// Expectation is what the caller knows from verified, signed commit
// metadata. Unseal refuses any blob whose payload differs.
type Expectation struct {
	ImageDigest   [32]byte
	CommitID      [32]byte
	RollbackIndex uint64
	// MinRollbackIndex is an extra floor besides the TPM counter (for
	// example from a configuration); 0 means none.
	MinRollbackIndex uint64
}

// Unseal recovers and checks the payload of a serialised sealed blob. The
// blob is hostile input; in order:
//
//  1. it is parsed with bounds (ErrMalformedBlob);
//  2. its public area must be a KEYEDHASH object with exactly the cfs
//     attributes, nameAlg SHA-256 and authPolicy equal to
//     PolicyAuthorize(enrolled policy key, PolicyRef) recomputed here
//     (ErrObjectPublic);
//  3. the PCR policy signature must verify in software against the enrolled
//     key (ErrPolicySignature);
//  4. the TPM's SRK must be the enrolled one (ErrSRKMismatch);
//  5. the creation data must name that SRK as parent and hash to the
//     creation hash, and TPM2_CertifyCreation must accept the ticket for
//     the loaded object (ErrCreationTicket);
//  6. in a policy session salted to the enrolled SRK: TPM2_PolicyPCR
//     (*PCRMismatchError naming each PCR with expected and current value),
//     TPM2_VerifySignature of the policy with the enrolled key
//     (ErrPolicySignature), TPM2_PolicyAuthorize; then TPM2_Unseal with
//     the response encrypted (AES-128 CFB) and HMAC-authenticated;
//  7. the payload must equal expect byte for byte, in constant time
//     (ErrPayloadMismatch): this, not the TPM, is what stops an object
//     an attacker minted with the right policy but another digest;
//  8. its rollback index must not be below the TPM counter nor
//     expect.MinRollbackIndex (*RollbackError).
//
// Every transient object and session is flushed before returning.
func Unseal(t transport.TPM, enr *Enrollment, blob []byte, expect Expectation) (*SealedPayload, error) {
	if err := enr.Validate(); err != nil {
		return nil, err
	}
	b, err := ParseSealedBlob(blob)
	if err != nil {
		return nil, err
	}
	d, err := b.decode()
	if err != nil {
		return nil, err
	}
	if err := checkSealedPublic(enr, d.public, b.Public); err != nil {
		return nil, err
	}
	key, err := enr.policyPublicKey()
	if err != nil {
		return nil, err
	}
	approved, err := b.Policy.verify(enr, key)
	if err != nil {
		return nil, err
	}

	s, err := loadSRK(t, enr)
	if err != nil {
		return nil, err
	}
	defer s.close()

	if err := checkCreationData(enr, d, b); err != nil {
		return nil, err
	}
	objName, err := tpm2.ObjectName(d.public)
	if err != nil {
		return nil, fmt.Errorf("tpm: sealed object name: %w", err)
	}
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: s.handle, Name: s.name, Auth: saltedHMAC(s)},
		InPrivate:    d.private,
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(t)
	if err != nil {
		// The private area is integrity-protected by the SRK: a private
		// area from another parent, or altered, does not load.
		return nil, refuse(ErrMalformedBlob, "load under the enrolled SRK", nil, nil, err)
	}
	defer flush(t, loaded.ObjectHandle)
	if !bytes.Equal(loaded.Name.Buffer, objName.Buffer) {
		return nil, refuse(ErrObjectPublic, "loaded object name", objName.Buffer, loaded.Name.Buffer, nil)
	}
	obj := tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: *objName}
	if err := certifyCreation(t, s, obj, b); err != nil {
		return nil, err
	}

	data, err := unsealWithPolicy(t, enr, s, obj, &b.Policy, approved)
	if err != nil {
		return nil, err
	}
	got, err := parsePayload(data)
	if err != nil {
		return nil, err
	}
	if err := comparePayload(got, expect); err != nil {
		return nil, err
	}
	if got.RollbackIndex < expect.MinRollbackIndex {
		return nil, &RollbackError{RollbackIndex: got.RollbackIndex, Counter: expect.MinRollbackIndex, Op: "unseal"}
	}
	counter, err := readCounter(t, s, enr)
	if err != nil {
		return nil, err
	}
	if got.RollbackIndex < counter {
		return nil, &RollbackError{RollbackIndex: got.RollbackIndex, Counter: counter, Op: "unseal"}
	}
	return got, nil
}

// checkSealedPublic verifies the public area field by field (for precise
// errors) and then as a whole against the exact template.
func checkSealedPublic(enr *Enrollment, pub *tpm2.TPMTPublic, raw []byte) error {
	want, err := authPolicy(enr.PolicyKeyName)
	if err != nil {
		return err
	}
	if pub.Type != tpm2.TPMAlgKeyedHash {
		return &VerificationError{Reason: ErrObjectPublic, What: "type",
			Expected: "KEYEDHASH (0x0008)", Actual: fmt.Sprintf("0x%04x", uint16(pub.Type))}
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return &VerificationError{Reason: ErrObjectPublic, What: "nameAlg",
			Expected: "SHA-256 (0x000b)", Actual: fmt.Sprintf("0x%04x", uint16(pub.NameAlg))}
	}
	if pub.ObjectAttributes != sealedAttributes {
		return &VerificationError{Reason: ErrObjectPublic, What: "object attributes",
			Expected: describeAttrs(sealedAttributes), Actual: describeAttrs(pub.ObjectAttributes)}
	}
	if subtle.ConstantTimeCompare(pub.AuthPolicy.Buffer, want) != 1 {
		return refuse(ErrObjectPublic, "authPolicy (PolicyAuthorize of the enrolled policy key)", want, pub.AuthPolicy.Buffer, nil)
	}
	unique, err := pub.Unique.KeyedHash()
	if err != nil || len(unique.Buffer) != sha256.Size {
		return &VerificationError{Reason: ErrObjectPublic, What: "unique field", Expected: "a SHA-256 digest"}
	}
	tmpl := sealedPublic(want)
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique.Buffer})
	if exp := tpm2.Marshal(tmpl); !bytes.Equal(exp, raw) {
		return refuse(ErrObjectPublic, "public area (scheme or parameters)", exp, raw, nil)
	}
	return nil
}

func describeAttrs(a tpm2.TPMAObject) string {
	var parts []string
	add := func(on bool, name string) {
		if on {
			parts = append(parts, name)
		}
	}
	add(a.FixedTPM, "fixedTPM")
	add(a.STClear, "stClear")
	add(a.FixedParent, "fixedParent")
	add(a.SensitiveDataOrigin, "sensitiveDataOrigin")
	add(a.UserWithAuth, "userWithAuth")
	add(a.AdminWithPolicy, "adminWithPolicy")
	add(a.NoDA, "noDA")
	add(a.EncryptedDuplication, "encryptedDuplication")
	add(a.Restricted, "restricted")
	add(a.Decrypt, "decrypt")
	add(a.SignEncrypt, "sign")
	s := fmt.Sprintf("0x%x", tpm2.Marshal(a))
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, "|") + ")"
	}
	return s
}

// checkCreationData ties the creation data to the blob and the enrolled
// SRK: its hash is the stored creation hash, its parent is the SRK.
func checkCreationData(enr *Enrollment, d *decodedBlob, b *SealedBlob) error {
	sum := sha256.Sum256(b.CreationData)
	if !bytes.Equal(sum[:], b.CreationHash) {
		return refuse(ErrCreationTicket, "creation hash of the creation data", sum[:], b.CreationHash, nil)
	}
	if d.cdata.ParentNameAlg != tpm2.TPMAlgSHA256 || !bytes.Equal(d.cdata.ParentName.Buffer, enr.SRKName) {
		return refuse(ErrCreationTicket, "parent name in the creation data", enr.SRKName, d.cdata.ParentName.Buffer, nil)
	}
	if d.ticket.Tag != tpm2.TPMSTCreation || d.ticket.Hierarchy != tpm2.TPMRHOwner {
		return &VerificationError{Reason: ErrCreationTicket, What: "creation ticket tag/hierarchy",
			Expected: "TPM_ST_CREATION in the owner hierarchy",
			Actual:   fmt.Sprintf("tag 0x%04x hierarchy 0x%08x", uint16(d.ticket.Tag), uint32(d.ticket.Hierarchy))}
	}
	return nil
}

// certifyCreation asks the TPM to validate the creation ticket for the
// loaded object (an HMAC over the object name and creation hash with the
// owner hierarchy's proof value, which only this TPM knows). The response
// goes through an audit session salted to the SRK so an interposer cannot
// fake the success.
func certifyCreation(t transport.TPM, s *srk, obj tpm2.NamedHandle, b *SealedBlob) error {
	ticket, err := tpm2.Unmarshal[tpm2.TPMTTKCreation](b.CreationTicket)
	if err != nil {
		return refuse(ErrMalformedBlob, "creation ticket", nil, nil, err)
	}
	rsp, err := tpm2.CertifyCreation{
		SignHandle:     tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:   obj,
		CreationHash:   tpm2.TPM2BDigest{Buffer: b.CreationHash},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		CreationTicket: *ticket,
	}.Execute(t, saltedHMAC(s, tpm2.Audit()))
	if err != nil {
		return refuse(ErrCreationTicket, "TPM2_CertifyCreation", nil, nil, err)
	}
	att, err := rsp.CertifyInfo.Contents()
	if err != nil {
		return refuse(ErrCreationTicket, "certify info", nil, nil, err)
	}
	info, err := att.Attested.Creation()
	if err != nil {
		return refuse(ErrCreationTicket, "certify info", nil, nil, err)
	}
	if !bytes.Equal(info.ObjectName.Buffer, obj.Name.Buffer) || !bytes.Equal(info.CreationHash.Buffer, b.CreationHash) {
		return refuse(ErrCreationTicket, "certified object name and creation hash",
			append(obj.Name.Buffer, b.CreationHash...), append(info.ObjectName.Buffer, info.CreationHash.Buffer...), nil)
	}
	return nil
}

// unsealWithPolicy satisfies the object's policy in a session salted to the
// enrolled SRK and unseals with response encryption.
func unsealWithPolicy(t transport.TPM, enr *Enrollment, s *srk, obj tpm2.NamedHandle, p *SignedPolicy, approved []byte) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(s.handle, s.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, fmt.Errorf("tpm: start policy session: %w", err)
	}
	// The session is flushed by the TPM after a successful Unseal (it is
	// not continued); flushing again then fails harmlessly.
	defer func() { _ = closeSess() }()

	_, err = tpm2.PolicyPCR{
		PolicySession: sess.Handle(),
		PcrDigest:     tpm2.TPM2BDigest{Buffer: pcrValuesDigest(p.Values)},
		Pcrs:          pcrSelection(p.PCRs),
	}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCValue) {
			return nil, pcrMismatch(t, p, err)
		}
		return nil, fmt.Errorf("tpm: PolicyPCR: %w", err)
	}

	keyPub, err := enr.policyPublicKey()
	if err != nil {
		return nil, err
	}
	tmpl, err := policyKeyPublic(keyPub)
	if err != nil {
		return nil, err
	}
	// The owner hierarchy, not the null one: a key loaded in the null
	// hierarchy gets a null ticket that PolicyAuthorize refuses.
	ext, err := tpm2.LoadExternal{
		InPublic:  tpm2.New2B(tmpl),
		Hierarchy: tpm2.TPMRHOwner,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: load policy key: %w", err)
	}
	defer flush(t, ext.ObjectHandle)
	if !bytes.Equal(ext.Name.Buffer, enr.PolicyKeyName) {
		return nil, refuse(ErrPolicySignature, "policy key name in the TPM", enr.PolicyKeyName, ext.Name.Buffer, nil)
	}
	aHash := approvalDigest(approved)
	ver, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: ext.ObjectHandle, Name: ext.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: aHash},
		Signature: p.tpmSignature(),
	}.Execute(t)
	if err != nil {
		return nil, refuse(ErrPolicySignature, "TPM2_VerifySignature", nil, nil, err)
	}
	_, err = tpm2.PolicyAuthorize{
		PolicySession:  sess.Handle(),
		ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved},
		PolicyRef:      tpm2.TPM2BDigest{Buffer: []byte(PolicyRef)},
		KeySign:        ext.Name,
		CheckTicket:    ver.Validation,
	}.Execute(t)
	if err != nil {
		return nil, refuse(ErrPolicySignature, "TPM2_PolicyAuthorize", nil, nil, err)
	}

	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.Handle, Name: obj.Name, Auth: sess}}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCPolicyFail) {
			return nil, refuse(ErrObjectPublic, "the object's policy was not satisfied by the authorized PCR policy", nil, nil, err)
		}
		return nil, fmt.Errorf("tpm: unseal: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// pcrMismatch reads the policy's PCRs to say which differ.
func pcrMismatch(t transport.TPM, p *SignedPolicy, tpmErr error) error {
	cur, err := ReadPCRs(t, p.PCRs)
	if err != nil {
		return &PCRMismatchError{Err: errors.Join(tpmErr, fmt.Errorf("reading PCRs to explain: %w", err))}
	}
	e := &PCRMismatchError{Err: tpmErr}
	for i, pcr := range p.PCRs {
		if !bytes.Equal(cur[pcr], p.Values[i]) {
			e.Mismatches = append(e.Mismatches, PCRMismatch{PCR: pcr, Expected: p.Values[i], Actual: cur[pcr]})
		}
	}
	return e
}

// comparePayload compares in constant time and names the first differing
// field.
func comparePayload(got *SealedPayload, want Expectation) error {
	d := subtle.ConstantTimeCompare(got.ImageDigest[:], want.ImageDigest[:])
	c := subtle.ConstantTimeCompare(got.CommitID[:], want.CommitID[:])
	r := subtle.ConstantTimeCompare(u64be(got.RollbackIndex), u64be(want.RollbackIndex))
	if d&c&r == 1 {
		return nil
	}
	switch {
	case d != 1:
		return refuse(ErrPayloadMismatch, "image digest", want.ImageDigest[:], got.ImageDigest[:], nil)
	case c != 1:
		return refuse(ErrPayloadMismatch, "commit id", want.CommitID[:], got.CommitID[:], nil)
	default:
		return &VerificationError{Reason: ErrPayloadMismatch, What: "rollback index",
			Expected: fmt.Sprint(want.RollbackIndex), Actual: fmt.Sprint(got.RollbackIndex)}
	}
}
