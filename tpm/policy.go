package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// SignedPolicy is a PCR policy approved by the policy key: the PCR values
// (SHA-256 bank) the sealed object may be unsealed under, and the ECDSA
// signature over SHA-256(PolicyPCR digest || PolicyRef). A new signature
// for new values (after a firmware or dbx update) re-enables an existing
// sealed object without re-sealing it.
type SignedPolicy struct {
	// PCRs in ascending order, and the expected value of each.
	PCRs   []int
	Values [][]byte
	// R and S of the ECDSA P-256 signature, 32 bytes each.
	R, S []byte
}

// pcrSelection is the SHA-256 bank selection of pcrs.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// pcrValuesDigest is the pcrDigest argument of TPM2_PolicyPCR: SHA-256 of
// the selected PCR values concatenated in ascending PCR order.
func pcrValuesDigest(values [][]byte) []byte {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return h.Sum(nil)
}

// ApprovedPolicy returns the policy digest the signature approves: the
// session digest after TPM2_PolicyPCR over the expected values, starting
// from zero.
func (p *SignedPolicy) ApprovedPolicy() ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	cmd := tpm2.PolicyPCR{
		PcrDigest: tpm2.TPM2BDigest{Buffer: pcrValuesDigest(p.Values)},
		Pcrs:      pcrSelection(p.PCRs),
	}
	if err := cmd.Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// approvalDigest is aHash of TPM2_PolicyAuthorize: SHA-256(approvedPolicy
// || policyRef), the message the policy key signs.
func approvalDigest(approved []byte) []byte {
	h := sha256.New()
	h.Write(approved)
	h.Write([]byte(PolicyRef))
	return h.Sum(nil)
}

// authPolicy is the sealed object's authPolicy: PolicyAuthorize(keyName,
// PolicyRef) from a zero digest.
func authPolicy(keyName []byte) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	cmd := tpm2.PolicyAuthorize{
		PolicyRef: tpm2.TPM2BDigest{Buffer: []byte(PolicyRef)},
		KeySign:   tpm2.TPM2BName{Buffer: keyName},
	}
	if err := cmd.Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// SignPolicy signs a PCR policy for the enrollment's PCRs. pcrValues must
// hold exactly the enrollment's PolicyPCRs, 32 bytes each: for the literal
// PCRs the values they will have at unseal time, for the measure PCR its
// value before cfs measures into it (all zero right after a TPM reset).
func SignPolicy(enr *Enrollment, policyKey crypto.Signer, pcrValues map[int][]byte) (*SignedPolicy, error) {
	if err := enr.Validate(); err != nil {
		return nil, err
	}
	if err := signerMatches(enr, policyKey); err != nil {
		return nil, err
	}
	pcrs := enr.PolicyPCRs()
	if len(pcrValues) != len(pcrs) {
		return nil, fmt.Errorf("tpm: PCR values given for %v, the policy covers exactly %v", sortedKeys(pcrValues), pcrs)
	}
	p := &SignedPolicy{PCRs: pcrs}
	for _, pcr := range pcrs {
		v, ok := pcrValues[pcr]
		if !ok {
			return nil, fmt.Errorf("tpm: no expected value for PCR %d (the policy covers %v)", pcr, pcrs)
		}
		if len(v) != sha256.Size {
			return nil, fmt.Errorf("tpm: expected value for PCR %d is %d bytes, want %d (SHA-256 bank)", pcr, len(v), sha256.Size)
		}
		p.Values = append(p.Values, slices.Clone(v))
	}
	approved, err := p.ApprovedPolicy()
	if err != nil {
		return nil, err
	}
	der, err := policyKey.Sign(rand.Reader, approvalDigest(approved), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("tpm: sign PCR policy: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("tpm: policy signer returned a non-ASN.1 ECDSA signature")
	}
	if sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 256 || sig.S.BitLen() > 256 {
		return nil, fmt.Errorf("tpm: policy signer returned an out-of-range ECDSA signature")
	}
	p.R = sig.R.FillBytes(make([]byte, 32))
	p.S = sig.S.FillBytes(make([]byte, 32))
	return p, nil
}

// verify checks the signature in software against the enrolled key and
// that the policy covers exactly the enrolled PCRs.
func (p *SignedPolicy) verify(enr *Enrollment, key *ecdsa.PublicKey) ([]byte, error) {
	if want := enr.PolicyPCRs(); !slices.Equal(p.PCRs, want) {
		return nil, &VerificationError{
			Reason: ErrPolicySignature, What: "PCR selection of the signed policy",
			Expected: fmt.Sprint(want), Actual: fmt.Sprint(p.PCRs),
		}
	}
	approved, err := p.ApprovedPolicy()
	if err != nil {
		return nil, err
	}
	r := new(big.Int).SetBytes(p.R)
	s := new(big.Int).SetBytes(p.S)
	if !ecdsa.Verify(key, approvalDigest(approved), r, s) {
		return nil, &VerificationError{
			Reason: ErrPolicySignature, What: "software verification against the enrolled policy key",
			Expected: fmt.Sprintf("a signature by %x", []byte(enr.PolicyKeyName)),
		}
	}
	return approved, nil
}

// tpmSignature is the signature as TPM2_VerifySignature takes it.
func (p *SignedPolicy) tpmSignature() tpm2.TPMTSignature {
	return tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
		}),
	}
}

func sortedKeys(m map[int][]byte) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
