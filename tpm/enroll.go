package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Defaults for Enroll.
const (
	// DefaultSRKHandle is where the SRK is persisted: the TCG-registered
	// handle for the storage primary key, also used by systemd.
	DefaultSRKHandle uint32 = 0x81000001
	// DefaultNVIndex is the anti-rollback counter's NV index, in the range
	// the TCG handle registry reserves for the TPM owner
	// (0x01000000-0x013FFFFF); 0x4346 is "CF".
	DefaultNVIndex uint32 = 0x01004346
	// DefaultPCR is the PCR bound literally by the signed policy: PCR 7,
	// the Secure Boot policy.
	DefaultPCR = 7
	// DefaultMeasurePCR is the PCR cfs measures the booted root into and
	// whose pre-measurement value the policy requires (the latch): PCR 15,
	// "system identity" in the UAPI PCR registry.
	DefaultMeasurePCR = 15
	// EnrollmentVersion is the version of the Enrollment JSON.
	EnrollmentVersion = 1
	// PolicyRef is the policyRef of PolicyAuthorize: a signed policy for
	// another purpose (another policyRef) cannot unseal cfs objects.
	PolicyRef = "cfs-root"
)

// ownerRangeFirst/Last bound the owner-reserved NV index range.
const (
	ownerRangeFirst uint32 = 0x01000000
	ownerRangeLast  uint32 = 0x013FFFFF
)

// HexBytes is a byte string that serialises to JSON as lower-case hex.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) {
	return []byte(hex.EncodeToString(h)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	out, err := hex.DecodeString(string(b))
	if err != nil {
		return err
	}
	*h = out
	return nil
}

// Enrollment records the TPM and keys a machine was enrolled with. It is a
// trust anchor: whoever can rewrite it can substitute the policy key or
// the counter base. Keep the authoritative copy where the boot chain
// vouches for it (inside the signed or measured initramfs); a copy on the
// writable sysroot is only as trustworthy as the sysroot.
type Enrollment struct {
	Version int `json:"version"`
	// SRKHandle is the persistent handle of the SRK, or 0 when the SRK is
	// recreated with TPM2_CreatePrimary on every use.
	SRKHandle uint32 `json:"srkHandle"`
	// SRKPublic is the SRK's TPMT_PUBLIC (TPM wire format).
	SRKPublic HexBytes `json:"srkPublic"`
	// SRKName is the SRK's TPM name (nameAlg || SHA-256(public)).
	SRKName HexBytes `json:"srkName"`
	// PolicyKey is the policy-signing public key, PKIX PEM.
	PolicyKey string `json:"policyKey"`
	// PolicyKeyName is the TPM name of PolicyKey loaded with the fixed
	// template of policyKeyPublic; it is what PolicyAuthorize binds to.
	PolicyKeyName HexBytes `json:"policyKeyName"`
	// NVIndex is the anti-rollback counter and NVName its TPM name (which
	// covers its attributes, so a redefinition is detected).
	NVIndex uint32   `json:"nvIndex"`
	NVName  HexBytes `json:"nvName"`
	// CounterBase is the counter's raw value right after enrollment: the
	// rollback index a counter value stands for is raw - CounterBase
	// (a new counter starts above every counter this TPM ever deleted).
	CounterBase uint64 `json:"counterBase"`
	// PCRs are bound literally by the signed policy (SHA-256 bank).
	PCRs []int `json:"pcrs"`
	// MeasurePCR is the latch PCR: cfs measures into it after mounting the
	// root, and the policy requires its pre-measurement value.
	MeasurePCR int `json:"measurePcr"`
}

// PolicyPCRs returns the PCRs the policy covers: PCRs plus MeasurePCR,
// sorted.
func (e *Enrollment) PolicyPCRs() []int {
	out := slices.Clone(e.PCRs)
	if !slices.Contains(out, e.MeasurePCR) {
		out = append(out, e.MeasurePCR)
	}
	slices.Sort(out)
	return out
}

// ParseEnrollment decodes and validates an Enrollment (unknown fields are
// refused).
func ParseEnrollment(data []byte) (*Enrollment, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e Enrollment
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnrollment, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrEnrollment)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Marshal encodes the enrollment as indented JSON with a final newline.
func (e *Enrollment) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Validate checks the enrollment's internal consistency: version, PCR
// ranges, the SRK public area against its name and the TCG template, and
// the policy key against its name.
func (e *Enrollment) Validate() error {
	if e.Version != EnrollmentVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrEnrollment, e.Version, EnrollmentVersion)
	}
	if err := validatePCRs(e.PCRs, e.MeasurePCR); err != nil {
		return err
	}
	if e.NVIndex < ownerRangeFirst || e.NVIndex > ownerRangeLast {
		return fmt.Errorf("%w: NV index 0x%08x outside the owner range", ErrEnrollment, e.NVIndex)
	}
	if len(e.NVName) == 0 {
		return fmt.Errorf("%w: NV name missing", ErrEnrollment)
	}
	if e.SRKHandle != 0 && tpm2.TPMHT(e.SRKHandle>>24) != tpm2.TPMHTPersistent {
		return fmt.Errorf("%w: SRK handle 0x%08x is not a persistent handle", ErrEnrollment, e.SRKHandle)
	}
	pub, err := e.srkPublic()
	if err != nil {
		return err
	}
	if err := checkSRKPublic(pub); err != nil {
		return fmt.Errorf("%w: enrolled SRK: %v", ErrEnrollment, err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return fmt.Errorf("%w: SRK name: %v", ErrEnrollment, err)
	}
	if !bytes.Equal(name.Buffer, e.SRKName) {
		return fmt.Errorf("%w: SRK name %x does not match its public area (%x)", ErrEnrollment, []byte(e.SRKName), name.Buffer)
	}
	key, err := e.policyPublicKey()
	if err != nil {
		return err
	}
	kname, err := policyKeyName(key)
	if err != nil {
		return err
	}
	if !bytes.Equal(kname, e.PolicyKeyName) {
		return fmt.Errorf("%w: policy key name %x does not match the key (%x)", ErrEnrollment, []byte(e.PolicyKeyName), kname)
	}
	return nil
}

func validatePCRs(pcrs []int, measure int) error {
	if len(pcrs) == 0 {
		return fmt.Errorf("%w: no PCRs to bind", ErrEnrollment)
	}
	seen := map[int]bool{}
	for _, p := range append(slices.Clone(pcrs), measure) {
		if p < 0 || p > 23 {
			return fmt.Errorf("%w: PCR %d out of range 0-23", ErrEnrollment, p)
		}
		if p == measure && seen[p] {
			return fmt.Errorf("%w: measure PCR %d also listed as a literal PCR", ErrEnrollment, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: PCR %d listed twice", ErrEnrollment, p)
		}
		seen[p] = true
	}
	if measure == 11 || measure == 12 {
		return fmt.Errorf("%w: measure PCR %d is owned by systemd-stub/systemd-boot predictions", ErrEnrollment, measure)
	}
	return nil
}

func (e *Enrollment) srkPublic() (*tpm2.TPMTPublic, error) {
	pub, err := unmarshalCanonical[tpm2.TPMTPublic](e.SRKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: SRK public area: %v", ErrEnrollment, err)
	}
	return pub, nil
}

func (e *Enrollment) policyPublicKey() (*ecdsa.PublicKey, error) {
	block, rest := pem.Decode([]byte(e.PolicyKey))
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: policy key is not a single PEM PUBLIC KEY block", ErrEnrollment)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: policy key: %v", ErrEnrollment, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: policy key must be ECDSA P-256 (the TPM verifies it), got %T", ErrEnrollment, k)
	}
	return pub, nil
}

// EnrollOpts configures Enroll. Zero values select the defaults.
type EnrollOpts struct {
	// PolicyKey is the public half of an existing policy key to enroll.
	// Nil makes Enroll generate a new ECC P-256 key and return it.
	PolicyKey *ecdsa.PublicKey
	// PCRs bound literally (default [DefaultPCR]).
	PCRs []int
	// MeasurePCR is the latch PCR (0 selects DefaultMeasurePCR; PCR 0
	// belongs to the firmware and is never a valid choice).
	MeasurePCR int
	// NVIndex of the counter (0 selects DefaultNVIndex).
	NVIndex uint32
	// SRKHandle where the SRK is persisted (0 selects DefaultSRKHandle).
	SRKHandle uint32
	// TransientSRK never persists the SRK; it is recreated on every use.
	TransientSRK bool
	// OwnerAuth is the owner hierarchy's authorization (usually empty).
	OwnerAuth []byte
	// Previous is the enrollment being replaced: its counter (index, name
	// and base) is kept. Without it, an existing NV index at NVIndex is an
	// error unless ReplaceCounter is set.
	Previous *Enrollment
	// ReplaceCounter undefines an existing NV index at NVIndex and defines
	// a fresh counter (which the TPM starts above every counter it ever
	// deleted, so this never lowers the raw value; the base moves up with
	// it, which resets the rollback index to 0 — only for recovery).
	ReplaceCounter bool
}

// Enroll prepares a TPM for cfs: it reuses or creates and persists the SRK,
// enrolls (or generates) the policy key, and defines the anti-rollback
// counter. It returns the enrollment to store and, when it generated the
// policy key, that key (write it with EncodePolicyKeyPEM, mode 0600).
func Enroll(t transport.TPM, opts EnrollOpts) (enr *Enrollment, generated *ecdsa.PrivateKey, err error) {
	pcrs := opts.PCRs
	if len(pcrs) == 0 {
		pcrs = []int{DefaultPCR}
	}
	pcrs = slices.Clone(pcrs)
	slices.Sort(pcrs)
	measure := opts.MeasurePCR
	if measure == 0 {
		measure = DefaultMeasurePCR
	}
	if err := validatePCRs(pcrs, measure); err != nil {
		return nil, nil, err
	}
	nvIndex := opts.NVIndex
	if nvIndex == 0 {
		nvIndex = DefaultNVIndex
	}
	if nvIndex < ownerRangeFirst || nvIndex > ownerRangeLast {
		return nil, nil, fmt.Errorf("%w: NV index 0x%08x outside the owner range 0x%08x-0x%08x",
			ErrEnrollment, nvIndex, ownerRangeFirst, ownerRangeLast)
	}
	srkHandle := opts.SRKHandle
	if srkHandle == 0 {
		srkHandle = DefaultSRKHandle
	}
	if opts.TransientSRK {
		srkHandle = 0
	}
	if srkHandle != 0 && tpm2.TPMHT(srkHandle>>24) != tpm2.TPMHTPersistent {
		return nil, nil, fmt.Errorf("%w: SRK handle 0x%08x is not persistent", ErrEnrollment, srkHandle)
	}

	policyPub := opts.PolicyKey
	if policyPub == nil {
		generated, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("tpm: generate policy key: %w", err)
		}
		policyPub = &generated.PublicKey
	}
	keyName, err := policyKeyName(policyPub)
	if err != nil {
		return nil, nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(policyPub)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: encode policy key: %w", err)
	}

	srkPub, srkName, persisted, err := enrollSRK(t, srkHandle, opts.OwnerAuth)
	if err != nil {
		return nil, nil, err
	}
	enr = &Enrollment{
		Version:       EnrollmentVersion,
		SRKHandle:     persisted,
		SRKPublic:     tpm2.Marshal(*srkPub),
		SRKName:       srkName,
		PolicyKey:     string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})),
		PolicyKeyName: keyName,
		NVIndex:       nvIndex,
		PCRs:          pcrs,
		MeasurePCR:    measure,
	}
	if err := enrollCounter(t, enr, opts); err != nil {
		return nil, nil, err
	}
	if err := enr.Validate(); err != nil {
		return nil, nil, err
	}
	return enr, generated, nil
}

// enrollSRK returns the SRK's public area and name, persisting it at handle
// when that handle is free. A handle holding anything but the TCG ECC SRK
// is left alone and the SRK is used transiently (persisted = 0).
func enrollSRK(t transport.TPM, handle uint32, ownerAuth []byte) (*tpm2.TPMTPublic, []byte, uint32, error) {
	if handle != 0 {
		rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(t)
		switch {
		case err == nil:
			pub, perr := rp.OutPublic.Contents()
			if perr == nil && checkSRKPublic(pub) == nil {
				return pub, rp.Name.Buffer, handle, nil
			}
			// Taken by another key: use the SRK transiently.
			handle = 0
		case isHandleMissing(err):
			// Free: create and persist below.
		default:
			return nil, nil, 0, fmt.Errorf("tpm: read persistent handle 0x%08x: %w", handle, err)
		}
	}
	created, err := createSRK(t, ownerAuth)
	if err != nil {
		return nil, nil, 0, err
	}
	defer flush(t, created.ObjectHandle)
	pub, err := created.OutPublic.Contents()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("tpm: SRK public area: %w", err)
	}
	if handle != 0 {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)},
			ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
			PersistentHandle: tpm2.TPMHandle(handle),
		}.Execute(t)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("tpm: persist SRK at 0x%08x: %w", handle, err)
		}
	}
	return pub, created.Name.Buffer, handle, nil
}

func createSRK(t transport.TPM, ownerAuth []byte) (*tpm2.CreatePrimaryResponse, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(ownerAuth)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: create SRK: %w", err)
	}
	return rsp, nil
}

// checkSRKPublic accepts exactly the TCG ECC P-256 SRK template with a
// P-256 point as unique.
func checkSRKPublic(pub *tpm2.TPMTPublic) error {
	if pub.Type != tpm2.TPMAlgECC {
		return fmt.Errorf("SRK type 0x%x is not ECC", pub.Type)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return fmt.Errorf("SRK unique: %w", err)
	}
	if len(point.X.Buffer) != 32 || len(point.Y.Buffer) != 32 {
		return fmt.Errorf("SRK point is not P-256 sized")
	}
	want := tpm2.ECCSRKTemplate
	want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: point.X.Buffer},
		Y: tpm2.TPM2BECCParameter{Buffer: point.Y.Buffer},
	})
	if !bytes.Equal(tpm2.Marshal(want), tpm2.Marshal(*pub)) {
		return fmt.Errorf("public area is not the TCG ECC P-256 SRK template")
	}
	return nil
}

// srk is the SRK as loaded for one operation.
type srk struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic // the enrolled public area (salts sessions)
	close  func()
}

// loadSRK finds the enrolled SRK: at its persistent handle, or recreated
// with CreatePrimary when the handle is empty or holds another key. Its
// name must equal the enrolled name; the enrolled public area (not one read
// from the TPM) is what sessions are salted to.
func loadSRK(t transport.TPM, enr *Enrollment) (*srk, error) {
	pub, err := enr.srkPublic()
	if err != nil {
		return nil, err
	}
	if enr.SRKHandle != 0 {
		rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(enr.SRKHandle)}.Execute(t)
		if err == nil && bytes.Equal(rp.Name.Buffer, enr.SRKName) {
			return &srk{
				handle: tpm2.TPMHandle(enr.SRKHandle),
				name:   tpm2.TPM2BName{Buffer: enr.SRKName},
				public: *pub,
				close:  func() {},
			}, nil
		}
		if err != nil && !isHandleMissing(err) {
			return nil, fmt.Errorf("tpm: read SRK at 0x%08x: %w", enr.SRKHandle, err)
		}
		// Evicted or replaced: the owner seed decides whether the
		// recreated primary is still the enrolled one.
	}
	created, err := createSRK(t, nil)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(created.Name.Buffer, enr.SRKName) {
		flush(t, created.ObjectHandle)
		return nil, refuse(ErrSRKMismatch, "SRK name", enr.SRKName, created.Name.Buffer, nil)
	}
	h := created.ObjectHandle
	return &srk{
		handle: h,
		name:   created.Name,
		public: *pub,
		close:  func() { flush(t, h) },
	}, nil
}

// policyKeyPublic is the fixed TPM public area under which the policy key
// is loaded (LoadExternal) and named: ECC P-256, nameAlg SHA-256,
// sign|userWithAuth, no scheme (the signature carries ECDSA-SHA256).
func policyKeyPublic(pub *ecdsa.PublicKey) (tpm2.TPMTPublic, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return tpm2.TPMTPublic{}, fmt.Errorf("%w: policy key must be ECDSA P-256", ErrEnrollment)
	}
	ecdhPub, err := pub.ECDH()
	if err != nil {
		return tpm2.TPMTPublic{}, fmt.Errorf("%w: policy key: %v", ErrEnrollment, err)
	}
	raw := ecdhPub.Bytes() // 0x04 || X || Y
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			SignEncrypt:  true,
			UserWithAuth: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:65]},
		}),
	}, nil
}

func policyKeyName(pub *ecdsa.PublicKey) ([]byte, error) {
	p, err := policyKeyPublic(pub)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(&p)
	if err != nil {
		return nil, fmt.Errorf("tpm: policy key name: %w", err)
	}
	return name.Buffer, nil
}

// EncodePolicyKeyPEM encodes a policy private key as PKCS#8 PEM.
func EncodePolicyKeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	if k == nil || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: policy key must be ECDSA P-256", ErrEnrollment)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("tpm: encode policy key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePolicyKeyPEM decodes a policy private key (PKCS#8 "PRIVATE KEY" or
// SEC 1 "EC PRIVATE KEY"), refusing anything but ECDSA P-256.
func ParsePolicyKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: policy key is not a single PEM block", ErrEnrollment)
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block %q is not a private key", ErrEnrollment, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: policy key: %v", ErrEnrollment, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: policy key must be ECDSA P-256, got %T", ErrEnrollment, k)
	}
	return ec, nil
}

// signerMatches reports whether signer's public key is the enrolled policy
// key.
func signerMatches(enr *Enrollment, signer crypto.Signer) error {
	want, err := enr.policyPublicKey()
	if err != nil {
		return err
	}
	got, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || !want.Equal(got) {
		return fmt.Errorf("%w: the policy signer is not the enrolled policy key", ErrEnrollment)
	}
	return nil
}

// flush releases a transient object or session, ignoring errors: it runs
// on cleanup paths where the primary error matters more.
func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// isHandleMissing reports whether err is the TPM saying the handle does
// not exist.
func isHandleMissing(err error) bool {
	return errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCValue)
}

// unmarshalCanonical decodes a TPM structure and refuses trailing bytes or
// an encoding that does not re-marshal to the same bytes.
func unmarshalCanonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](data []byte) (out *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("decoding panicked: %v", r)
		}
	}()
	v, err := tpm2.Unmarshal[T, P](data)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), data) {
		return nil, fmt.Errorf("non-canonical encoding or trailing bytes")
	}
	return v, nil
}

func u64be(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
