package tpm

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// SealedPayload is what a sealed object holds: the expected composefs
// image digest (fs-verity SHA-256), the commit id and the commit's signed
// rollback index.
type SealedPayload struct {
	ImageDigest   [32]byte
	CommitID      [32]byte
	RollbackIndex uint64
}

// payloadMagic starts the sealed payload; its last byte is the version.
var payloadMagic = [4]byte{'c', 'f', 's', 1}

const payloadSize = 4 + 32 + 32 + 8

func (p *SealedPayload) marshal() []byte {
	b := make([]byte, 0, payloadSize)
	b = append(b, payloadMagic[:]...)
	b = append(b, p.ImageDigest[:]...)
	b = append(b, p.CommitID[:]...)
	return binary.BigEndian.AppendUint64(b, p.RollbackIndex)
}

func parsePayload(b []byte) (*SealedPayload, error) {
	if len(b) != payloadSize || subtle.ConstantTimeCompare(b[:4], payloadMagic[:]) != 1 {
		return nil, malformed("unsealed payload has %d bytes or a wrong magic", len(b))
	}
	var p SealedPayload
	copy(p.ImageDigest[:], b[4:36])
	copy(p.CommitID[:], b[36:68])
	p.RollbackIndex = binary.BigEndian.Uint64(b[68:76])
	return &p, nil
}

// SealedBlob is a sealed object with everything needed to unseal it: the
// TPM public and private areas, the creation data, hash and ticket (for
// TPM2_CertifyCreation), and the signed PCR policy. All TPM structures are
// in TPM wire format.
type SealedBlob struct {
	Public         []byte // TPMT_PUBLIC
	Private        []byte // TPM2B_PRIVATE contents
	CreationData   []byte // TPMS_CREATION_DATA
	CreationHash   []byte // SHA-256 of CreationData
	CreationTicket []byte // TPMT_TK_CREATION
	Policy         SignedPolicy
}

// Blob format: magic, version, then length-prefixed fields in a fixed
// order. Everything is big-endian; lengths are uint16.
var blobMagic = [8]byte{'C', 'F', 'S', 'T', 'P', 'M', 'S', 'B'}

const (
	// BlobVersion is the serialisation version MarshalBinary writes.
	BlobVersion = 1
	// MaxBlobSize bounds what ParseSealedBlob accepts.
	MaxBlobSize = 16 << 10
	// maxPolicyPCRs bounds the PCR list (PCRs 0-23).
	maxPolicyPCRs = 24
)

// MarshalBinary serialises the blob (versioned, length-prefixed).
func (b *SealedBlob) MarshalBinary() ([]byte, error) {
	var out bytes.Buffer
	out.Write(blobMagic[:])
	_ = binary.Write(&out, binary.BigEndian, uint16(BlobVersion))
	for _, f := range [][]byte{b.Public, b.Private, b.CreationData, b.CreationHash, b.CreationTicket} {
		if err := putField(&out, f); err != nil {
			return nil, err
		}
	}
	p := &b.Policy
	if len(p.PCRs) == 0 || len(p.PCRs) > maxPolicyPCRs || len(p.PCRs) != len(p.Values) {
		return nil, fmt.Errorf("tpm: blob policy has %d PCRs and %d values", len(p.PCRs), len(p.Values))
	}
	out.WriteByte(byte(len(p.PCRs)))
	for i, pcr := range p.PCRs {
		if pcr < 0 || pcr > 23 || len(p.Values[i]) != sha256.Size {
			return nil, fmt.Errorf("tpm: blob policy entry for PCR %d is invalid", pcr)
		}
		out.WriteByte(byte(pcr))
		out.Write(p.Values[i])
	}
	if len(p.R) != 32 || len(p.S) != 32 {
		return nil, fmt.Errorf("tpm: blob policy signature is not 2x32 bytes")
	}
	out.Write(p.R)
	out.Write(p.S)
	if out.Len() > MaxBlobSize {
		return nil, fmt.Errorf("tpm: blob of %d bytes exceeds %d", out.Len(), MaxBlobSize)
	}
	return out.Bytes(), nil
}

func putField(out *bytes.Buffer, f []byte) error {
	if len(f) == 0 || len(f) > 0xffff {
		return fmt.Errorf("tpm: blob field of %d bytes", len(f))
	}
	_ = binary.Write(out, binary.BigEndian, uint16(len(f)))
	out.Write(f)
	return nil
}

// reader is a bounds-checked cursor over untrusted bytes.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%s: need %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(what string) int {
	b := r.take(1, what)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16(what string) int {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) field(what string) []byte {
	n := r.u16(what + " length")
	if r.err == nil && n == 0 {
		r.err = fmt.Errorf("%s: empty", what)
		return nil
	}
	return slices.Clone(r.take(n, what))
}

// ParseSealedBlob decodes a serialised blob, treating it as hostile:
// every length is bounded by what is left, trailing bytes are refused, and
// the TPM structures must decode canonically. It does not check anything
// against an enrollment; Unseal does.
func ParseSealedBlob(data []byte) (*SealedBlob, error) {
	if len(data) > MaxBlobSize {
		return nil, malformed("%d bytes exceeds %d", len(data), MaxBlobSize)
	}
	r := &reader{b: data}
	if m := r.take(len(blobMagic), "magic"); m != nil && !bytes.Equal(m, blobMagic[:]) {
		return nil, malformed("bad magic %q", m)
	}
	if v := r.u16("version"); r.err == nil && v != BlobVersion {
		return nil, malformed("version %d, this build reads %d", v, BlobVersion)
	}
	b := &SealedBlob{
		Public:         r.field("public area"),
		Private:        r.field("private area"),
		CreationData:   r.field("creation data"),
		CreationHash:   r.field("creation hash"),
		CreationTicket: r.field("creation ticket"),
	}
	n := r.u8("PCR count")
	if r.err == nil && (n == 0 || n > maxPolicyPCRs) {
		r.err = fmt.Errorf("PCR count %d out of range", n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		pcr := r.u8("PCR index")
		val := r.take(sha256.Size, "PCR value")
		if r.err != nil {
			break
		}
		if pcr > 23 || (i > 0 && pcr <= b.Policy.PCRs[i-1]) {
			r.err = fmt.Errorf("PCR list not ascending within 0-23 at PCR %d", pcr)
			break
		}
		b.Policy.PCRs = append(b.Policy.PCRs, pcr)
		b.Policy.Values = append(b.Policy.Values, slices.Clone(val))
	}
	b.Policy.R = slices.Clone(r.take(32, "signature R"))
	b.Policy.S = slices.Clone(r.take(32, "signature S"))
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, malformed("%v", r.err)
	}
	if len(b.CreationHash) != sha256.Size {
		return nil, malformed("creation hash is %d bytes", len(b.CreationHash))
	}
	// The TPM structures must decode canonically (Unseal decodes them
	// again; this makes a parse error surface here, not in the TPM).
	if _, err := b.decode(); err != nil {
		return nil, err
	}
	return b, nil
}

// decodedBlob holds the TPM structures of a blob.
type decodedBlob struct {
	public  *tpm2.TPMTPublic
	private tpm2.TPM2BPrivate
	cdata   *tpm2.TPMSCreationData
	ticket  *tpm2.TPMTTKCreation
}

func (b *SealedBlob) decode() (*decodedBlob, error) {
	var d decodedBlob
	var err error
	if d.public, err = unmarshalCanonical[tpm2.TPMTPublic](b.Public); err != nil {
		return nil, malformed("public area: %v", err)
	}
	if d.cdata, err = unmarshalCanonical[tpm2.TPMSCreationData](b.CreationData); err != nil {
		return nil, malformed("creation data: %v", err)
	}
	if d.ticket, err = unmarshalCanonical[tpm2.TPMTTKCreation](b.CreationTicket); err != nil {
		return nil, malformed("creation ticket: %v", err)
	}
	d.private = tpm2.TPM2BPrivate{Buffer: b.Private}
	return &d, nil
}

// malformed is a refusal of a blob that does not parse.
func malformed(format string, args ...any) error {
	return &VerificationError{Reason: ErrMalformedBlob, What: fmt.Sprintf(format, args...)}
}
