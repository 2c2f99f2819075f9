package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/kvconf"
	"github.com/cfs-dev/cfs/tpm"
)

// TPM files of a sysroot (see docs/deployments.md, "TPM sealing").
const (
	TPMDir            = "cfs/tpm"
	TPMEnrollmentFile = "cfs/tpm/enrollment.json" // tpm.Enrollment
	TPMPolicyKeyFile  = "cfs/tpm/policy.key"      // policy-signing private key, PKCS#8 PEM, 0600
	TPMConfigFile     = "cfs/tpm/config"          // key = value: mode, pcrs, measure-pcr
	// TPMBlobFile is the sealed object of a deployment, in its directory.
	TPMBlobFile = "tpm.blob"
)

// TPMConfig is the sysroot's cfs/tpm/config. Its presence is what makes
// the sysroot enrolled: it is written last by EnrollTPM.
type TPMConfig struct {
	Mode       cmdline.TPMMode
	PCRs       []int
	MeasurePCR int
}

// Marshal encodes the config as "key = value" lines.
func (c TPMConfig) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString("# cfs TPM configuration (cfs-deploy tpm enroll)\n")
	fmt.Fprintf(&b, "mode = %s\n", c.Mode)
	pcrs := make([]string, len(c.PCRs))
	for i, p := range c.PCRs {
		pcrs[i] = strconv.Itoa(p)
	}
	fmt.Fprintf(&b, "pcrs = %s\n", strings.Join(pcrs, ","))
	fmt.Fprintf(&b, "measure-pcr = %d\n", c.MeasurePCR)
	return b.Bytes()
}

// ParseTPMConfig decodes cfs/tpm/config. Every key is required; unknown
// keys are refused.
func ParseTPMConfig(b []byte) (TPMConfig, error) {
	var c TPMConfig
	seen, err := kvconf.Parse(b, func(k, v string) error {
		var err error
		switch k {
		case "mode":
			c.Mode, err = cmdline.ParseTPM(v)
		case "pcrs":
			c.PCRs, err = ParsePCRList(v)
		case "measure-pcr":
			c.MeasurePCR, err = parsePCR(v)
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		return err
	})
	if err != nil {
		return c, fmt.Errorf("tpm config %w", err)
	}
	for _, k := range []string{"mode", "pcrs", "measure-pcr"} {
		if !seen[k] {
			return c, fmt.Errorf("tpm config: %s missing", k)
		}
	}
	return c, nil
}

// ParsePCRList parses a comma-separated list of PCR numbers ("7",
// "7,14"), sorted and without duplicates.
func ParsePCRList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		p, err := parsePCR(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("PCR %d listed twice", p)
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

func parsePCR(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 23 || strconv.Itoa(p) != s {
		return 0, fmt.Errorf("bad PCR %q: want 0-23", s)
	}
	return p, nil
}

// TPMSetup is an enrolled sysroot's TPM configuration and enrollment.
type TPMSetup struct {
	root       string
	Config     TPMConfig
	Enrollment *tpm.Enrollment
}

// LoadTPM reads the TPM configuration and enrollment of the sysroot at
// root. It returns nil and no error when the sysroot is not enrolled (no
// cfs/tpm/config). With mode off, Enrollment may be nil.
func LoadTPM(root string) (*TPMSetup, error) {
	b, err := os.ReadFile(filepath.Join(root, TPMConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cfg, err := ParseTPMConfig(b)
	if err != nil {
		return nil, err
	}
	ts := &TPMSetup{root: root, Config: cfg}
	eb, err := os.ReadFile(filepath.Join(root, TPMEnrollmentFile))
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.Mode == cmdline.TPMOff:
		return ts, nil
	case err != nil:
		return nil, fmt.Errorf("tpm enrollment: %w", err)
	}
	if ts.Enrollment, err = tpm.ParseEnrollment(eb); err != nil {
		return nil, fmt.Errorf("%s: %w", TPMEnrollmentFile, err)
	}
	return ts, nil
}

// Sealing reports whether switch seals new deployments: enrolled and mode
// not off.
func (ts *TPMSetup) Sealing() bool {
	return ts != nil && ts.Enrollment != nil && ts.Config.Mode != cmdline.TPMOff
}

// PolicyKey reads the policy-signing private key (root-only file).
func (ts *TPMSetup) PolicyKey() (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(filepath.Join(ts.root, TPMPolicyKeyFile))
	if err != nil {
		return nil, fmt.Errorf("tpm policy key: %w", err)
	}
	return tpm.ParsePolicyKeyPEM(b)
}

// SealDeployment seals {image digest, commit id, rollback index} of the
// deployment in dir (commit id, metadata m) to the PCR values the next
// boot is expected to show (the current literal PCRs, and the measure
// PCR's pre-measurement value, all zero after a reset), and writes the
// blob atomically to dir/tpm.blob.
func (ts *TPMSetup) SealDeployment(ctx context.Context, t transport.TPM, dir string, id commit.ID, m *commit.Metadata) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ts.Enrollment == nil {
		return errors.New("tpm: not enrolled")
	}
	key, err := ts.PolicyKey()
	if err != nil {
		return err
	}
	values, err := tpm.PolicyValues(t, ts.Enrollment, nil)
	if err != nil {
		return fmt.Errorf("expected PCR values: %w", err)
	}
	blob, err := tpm.Seal(t, ts.Enrollment, key, tpm.SealedPayload{
		ImageDigest: m.Image.Digest, CommitID: id, RollbackIndex: m.RollbackIndex,
	}, values)
	if err != nil {
		return fmt.Errorf("seal %s: %w", filepath.Base(dir), err)
	}
	b, err := blob.MarshalBinary()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, TPMBlobFile), b, 0o644); err != nil {
		return fmt.Errorf("write sealed blob: %w", err)
	}
	return nil
}

// PreSwapHook returns a Hooks.PreSwap that seals the new default
// deployment with t before its boot entry is installed. Any error refuses
// the switch (which then rolls back).
func (ts *TPMSetup) PreSwapHook(t transport.TPM) func(context.Context, *PreSwap) error {
	return func(ctx context.Context, p *PreSwap) error {
		return ts.SealDeployment(ctx, t, p.Dir, p.Deployment.Commit, p.Commit)
	}
}

// TPMEnrollOptions configures EnrollTPM.
type TPMEnrollOptions struct {
	Mode       cmdline.TPMMode // default required
	PCRs       []int           // default [tpm.DefaultPCR]
	MeasurePCR int             // 0: tpm.DefaultMeasurePCR
}

// TPMEnrollResult describes an enrollment.
type TPMEnrollResult struct {
	Mode       cmdline.TPMMode `json:"mode"`
	PCRs       []int           `json:"pcrs"`
	MeasurePCR int             `json:"measure-pcr"`
	// Reenrolled: an existing enrollment's policy key and counter were kept.
	Reenrolled bool `json:"reenrolled"`
	// Sealed lists the deployments sealed right away (every deployment
	// with a boot entry, and a staged one), default first.
	Sealed []string `json:"sealed"`
}

// EnrollTPM enrolls the TPM t for the sysroot (tpm.Enroll), writes
// cfs/tpm/{policy.key,enrollment.json,config} atomically (config last,
// it is the commit point), and, unless the mode is off, seals every
// deployment that can boot next, so that the next boot can unseal. An
// existing enrollment's policy key and anti-rollback counter are kept.
func (s *Sysroot) EnrollTPM(ctx context.Context, t transport.TPM, opts TPMEnrollOptions) (*TPMEnrollResult, error) {
	if opts.Mode == "" {
		opts.Mode = cmdline.TPMRequired
	}
	if _, err := cmdline.ParseTPM(string(opts.Mode)); err != nil {
		return nil, err
	}
	if len(opts.PCRs) == 0 {
		opts.PCRs = []int{tpm.DefaultPCR}
	}
	if opts.MeasurePCR == 0 {
		opts.MeasurePCR = tpm.DefaultMeasurePCR
	}
	if slices.Contains(opts.PCRs, opts.MeasurePCR) {
		return nil, fmt.Errorf("tpm enroll: measure PCR %d is also a literal PCR", opts.MeasurePCR)
	}
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()

	eo := tpm.EnrollOpts{PCRs: opts.PCRs, MeasurePCR: opts.MeasurePCR}
	res := &TPMEnrollResult{Mode: opts.Mode, PCRs: opts.PCRs, MeasurePCR: opts.MeasurePCR, Sealed: []string{}}
	var key *ecdsa.PrivateKey
	if kb, err := os.ReadFile(s.path(TPMPolicyKeyFile)); err == nil {
		if key, err = tpm.ParsePolicyKeyPEM(kb); err != nil {
			return nil, fmt.Errorf("%s: %w", TPMPolicyKeyFile, err)
		}
		eo.PolicyKey = &key.PublicKey
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if eb, err := os.ReadFile(s.path(TPMEnrollmentFile)); err == nil {
		prev, err := tpm.ParseEnrollment(eb)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", TPMEnrollmentFile, err)
		}
		eo.Previous = prev
		res.Reenrolled = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	enr, generated, err := tpm.Enroll(t, eo)
	if err != nil {
		return nil, fmt.Errorf("tpm enroll: %w", err)
	}
	if err := mkdirDurable(s.path(TPMDir)); err != nil {
		return nil, err
	}
	if generated != nil {
		pem, err := tpm.EncodePolicyKeyPEM(generated)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(s.path(TPMPolicyKeyFile), pem, 0o600); err != nil {
			return nil, err
		}
	}
	eb, err := enr.Marshal()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(s.path(TPMEnrollmentFile), eb, 0o644); err != nil {
		return nil, err
	}
	cfg := TPMConfig{Mode: opts.Mode, PCRs: opts.PCRs, MeasurePCR: opts.MeasurePCR}
	if err := atomicfile.WriteFile(s.path(TPMConfigFile), cfg.Marshal(), 0o644); err != nil {
		return nil, err
	}
	ts := &TPMSetup{root: s.root, Config: cfg, Enrollment: enr}
	if !ts.Sealing() {
		return res, nil
	}
	sealed, err := s.resealAll(ctx, t, ts)
	res.Sealed = sealed
	return res, err
}

// ResealTPM re-creates the sealed blob of every deployment that can boot
// next (those with a boot entry, and a staged one) from the current PCR
// state, after verifying each deployment's commit signature and image
// digest: after a firmware or dbx update changed PCR 7, or after an
// enrollment. It returns the deployments sealed, in boot order.
func (s *Sysroot) ResealTPM(ctx context.Context, t transport.TPM) ([]string, error) {
	ts, err := LoadTPM(s.root)
	if err != nil {
		return nil, err
	}
	if !ts.Sealing() {
		return nil, errors.New("tpm: the sysroot is not enrolled, or its TPM mode is off (cfs-deploy tpm enroll)")
	}
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	return s.resealAll(ctx, t, ts)
}

// resealAll seals every bootable deployment; called with the lock held.
func (s *Sysroot) resealAll(ctx context.Context, t transport.TPM, ts *TPMSetup) ([]string, error) {
	deps, err := s.bootableDeployments(ctx)
	if err != nil {
		return nil, err
	}
	sealed := []string{}
	for _, d := range deps {
		m, err := s.verifiedDeployment(ctx, d)
		if err != nil {
			return sealed, err
		}
		if err := ts.SealDeployment(ctx, t, s.deployDir(d), d.Commit, m); err != nil {
			return sealed, err
		}
		sealed = append(sealed, d.Path())
	}
	return sealed, nil
}

// bootableDeployments returns the staged deployment (if any) and those of
// the cfs boot entries, in boot order, without duplicates.
func (s *Sysroot) bootableDeployments(ctx context.Context) ([]Deployment, error) {
	var out []Deployment
	_, staged, err := s.readStaged()
	if err != nil {
		return nil, err
	}
	if staged != nil {
		out = append(out, *staged)
	}
	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range cfsEntries(entries) {
		if !slices.Contains(out, *e.Dep) {
			out = append(out, *e.Dep)
		}
	}
	return out, nil
}

// verifiedDeployment reads d's copy of its commit, verifies its signature
// against the trust store and its image against the signed digest.
func (s *Sysroot) verifiedDeployment(ctx context.Context, d Deployment) (*commit.Metadata, error) {
	m, canonical, envelope, err := s.readDeploymentCommit(d)
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	trust, err := s.trustStore()
	if err != nil {
		return nil, err
	}
	if _, err := pull.VerifyCommit(canonical, envelope, trust); err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	got, _, err := fsverity.DigestFile(ctx, filepath.Join(s.deployDir(d), ImageFile))
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	if got != m.Image.Digest {
		return nil, pull.Mismatch("image of deployment "+d.String(), m.Image.Digest, got)
	}
	return m, nil
}

// TPMCheck is the outcome of CheckTPM.
type TPMCheck struct {
	Index      int    `json:"index"`
	Deployment string `json:"deployment"`
	// WillUnseal: every check the initramfs runs passes for this
	// deployment (with Latched, under the expected boot-time value of the
	// measure PCR instead of its current one).
	WillUnseal bool `json:"will-unseal"`
	// Latched: the measure PCR has been extended since boot (the system
	// is up), so the check used a policy re-signed for its current value
	// and compared the blob's expected value with the boot-time value
	// separately.
	Latched bool   `json:"latched"`
	Message string `json:"message"`
	// Err is the refusal when WillUnseal is false.
	Err error `json:"-"`
}

// CheckTPM runs, without mounting anything, every check the initramfs
// runs before it trusts a deployment's sealed blob: the commit signature
// against the trust store, the boot entry's composefs= digest and the
// image against the signed digest, and tpm.Unseal with the expectation
// from the signed commit (object, policy signature, SRK, creation ticket,
// PCR policy, payload, rollback counter). index is a status index; -1
// means the default deployment.
//
// On a running system the measure PCR (15) has been extended after the
// root was mounted, so the sealed policy cannot be satisfied now. Then
// CheckTPM (1) checks that the blob's policy expects the measure PCR's
// boot-time value (all zero, what switch seals to) and (2) runs Unseal
// again with the blob's policy re-signed by the policy key for the
// measure PCR's *current* value and every other PCR's value unchanged,
// so that every other check, including PCR 7, the payload and the
// counter, still runs in the TPM. This needs the policy private key.
//
// A failed check is not an error: it is reported in the result (Err holds
// the typed error). Errors are for checks that could not run.
func (s *Sysroot) CheckTPM(ctx context.Context, t transport.TPM, index int) (*TPMCheck, error) {
	ts, err := LoadTPM(s.root)
	if err != nil {
		return nil, err
	}
	if !ts.Sealing() {
		return nil, errors.New("tpm: the sysroot is not enrolled, or its TPM mode is off (cfs-deploy tpm enroll)")
	}
	st, err := s.status(ctx)
	if err != nil {
		return nil, err
	}
	var ds *DeploymentStatus
	for i := range st.Deployments {
		if (index < 0 && st.Deployments[i].Default) || (index >= 0 && st.Deployments[i].Index == index) {
			ds = &st.Deployments[i]
			break
		}
	}
	if ds == nil {
		if index < 0 {
			return nil, fmt.Errorf("%w: no default deployment", ErrNoDeployment)
		}
		return nil, fmt.Errorf("%w: index %d (see status)", ErrNoDeployment, index)
	}
	d, err := ParseDeploymentPath(ds.Deployment)
	if err != nil {
		return nil, err
	}
	res := &TPMCheck{Index: ds.Index, Deployment: ds.Deployment}
	fail := func(err error) (*TPMCheck, error) {
		res.Err = err
		res.Message = "will NOT unseal at boot: " + err.Error()
		return res, nil
	}
	m, err := s.verifiedDeployment(ctx, d)
	if err != nil {
		return fail(err)
	}
	boot, err := cmdline.ParseBoot(cmdline.Split(ds.Options))
	if err != nil {
		return fail(fmt.Errorf("boot entry: %w", err))
	}
	if boot.Composefs == nil || boot.Composefs.SHA256 != m.Image.Digest {
		return fail(verifyErr("boot entry composefs= digest", fmt.Errorf("entry has %v, the signed commit %s", boot.Composefs, m.Image.Digest)))
	}
	blob, err := os.ReadFile(filepath.Join(s.deployDir(d), TPMBlobFile))
	if err != nil {
		return fail(fmt.Errorf("sealed blob: %w", err))
	}
	expect := tpm.Expectation{ImageDigest: m.Image.Digest, CommitID: d.Commit, RollbackIndex: m.RollbackIndex}
	_, err = tpm.Unseal(t, ts.Enrollment, blob, expect)
	if err == nil {
		res.WillUnseal = true
		res.Message = "will unseal at boot"
		return res, nil
	}
	var pm *tpm.PCRMismatchError
	mp := ts.Enrollment.MeasurePCR
	if !errors.As(err, &pm) || !slices.ContainsFunc(pm.Mismatches, func(m tpm.PCRMismatch) bool { return m.PCR == mp }) {
		return fail(err)
	}
	// The measure PCR differs: the system is up and latched. Check it
	// against its boot-time value, and everything else (other PCRs too)
	// under a policy re-signed for its current value.
	res.Latched = true
	if err := latchedCheck(t, ts, blob, expect); err != nil {
		return fail(err)
	}
	res.WillUnseal = true
	res.Message = fmt.Sprintf("would unseal at boot (PCR %d latched now)", mp)
	return res, nil
}

// latchedCheck is the second half of CheckTPM's latched case (see there).
func latchedCheck(t transport.TPM, ts *TPMSetup, blobBytes []byte, expect tpm.Expectation) error {
	enr := ts.Enrollment
	blob, err := tpm.ParseSealedBlob(blobBytes)
	if err != nil {
		return err
	}
	bootValue := make([]byte, 32) // what switch seals to: the value after a TPM reset
	i := slices.Index(blob.Policy.PCRs, enr.MeasurePCR)
	if i < 0 || i >= len(blob.Policy.Values) {
		return &tpm.VerificationError{Reason: tpm.ErrPolicySignature, What: fmt.Sprintf("PCR %d in the signed policy", enr.MeasurePCR),
			Expected: "present", Actual: "absent"}
	}
	if !bytes.Equal(blob.Policy.Values[i], bootValue) {
		return &tpm.PCRMismatchError{Mismatches: []tpm.PCRMismatch{{PCR: enr.MeasurePCR, Expected: blob.Policy.Values[i], Actual: bootValue}},
			Err: fmt.Errorf("the policy expects PCR %d = %s at boot, its boot-time value is %s",
				enr.MeasurePCR, hex.EncodeToString(blob.Policy.Values[i]), hex.EncodeToString(bootValue))}
	}
	cur, err := tpm.ReadPCRs(t, []int{enr.MeasurePCR})
	if err != nil {
		return err
	}
	values := map[int][]byte{}
	for j, p := range blob.Policy.PCRs {
		values[p] = blob.Policy.Values[j]
	}
	values[enr.MeasurePCR] = cur[enr.MeasurePCR]
	key, err := ts.PolicyKey()
	if err != nil {
		return fmt.Errorf("checking a latched system needs the policy key: %w", err)
	}
	pol, err := tpm.SignPolicy(enr, key, values)
	if err != nil {
		return err
	}
	blob.Policy = *pol
	b, err := blob.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = tpm.Unseal(t, enr, b, expect)
	return err
}

// TPMBlessResult describes a bless.
type TPMBlessResult struct {
	Deployment    string `json:"deployment"`
	RollbackIndex uint64 `json:"rollback-index"`
	Counter       uint64 `json:"counter"`
}

// BlessTPM raises the anti-rollback counter to the rollback index of the
// booted deployment (the default one when none is booted), after
// verifying its commit signature (tpm.Bless). Run it once the boot is
// known good (after boot-complete.target).
func (s *Sysroot) BlessTPM(ctx context.Context, t transport.TPM) (*TPMBlessResult, error) {
	ts, err := LoadTPM(s.root)
	if err != nil {
		return nil, err
	}
	if ts == nil || ts.Enrollment == nil {
		return nil, errors.New("tpm: the sysroot is not enrolled (cfs-deploy tpm enroll)")
	}
	d, err := s.blessTarget(ctx)
	if err != nil {
		return nil, err
	}
	m, canonical, envelope, err := s.readDeploymentCommit(*d)
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	trust, err := s.trustStore()
	if err != nil {
		return nil, err
	}
	if _, err := pull.VerifyCommit(canonical, envelope, trust); err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	if err := tpm.Bless(t, ts.Enrollment, m.RollbackIndex); err != nil {
		return nil, err
	}
	c, err := tpm.ReadCounter(t, ts.Enrollment)
	if err != nil {
		return nil, err
	}
	return &TPMBlessResult{Deployment: d.Path(), RollbackIndex: m.RollbackIndex, Counter: c}, nil
}

func (s *Sysroot) blessTarget(ctx context.Context) (*Deployment, error) {
	booted, err := s.booted()
	if err != nil || booted != nil {
		return booted, err
	}
	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	if cfs := cfsEntries(entries); len(cfs) > 0 {
		return cfs[0].Dep, nil
	}
	return nil, fmt.Errorf("%w: nothing booted and no default deployment", ErrNoDeployment)
}

// TPMStatus is the "tpm" object of `cfs-deploy status --json`.
type TPMStatus struct {
	// Mode is the configured mode ("off" when not enrolled).
	Mode       cmdline.TPMMode `json:"mode"`
	Enrolled   bool            `json:"enrolled"`
	PCRs       []int           `json:"pcrs"`
	MeasurePCR int             `json:"measure-pcr"`
	// Reachable: the TPM answered.
	Reachable bool `json:"reachable"`
	// Counter is the anti-rollback counter as a rollback index (nil when
	// not enrolled or no TPM is reachable).
	Counter *uint64 `json:"counter"`
	// MeasuredPCRValue is the measure PCR's current SHA-256 value in hex
	// ("" when no TPM is reachable).
	MeasuredPCRValue string `json:"measured-pcr-value"`
	// BootedDigest is the image digest of the booted deployment's signed
	// commit ("" when nothing is booted).
	BootedDigest string `json:"booted-digest"`
	// Sealed lists the deployments that have a sealed blob.
	Sealed []string `json:"sealed"`
	// Error explains why the TPM was not read, or what failed reading it.
	Error string `json:"error,omitempty"`
}

// TPMStatus reports the TPM state for status. t may be nil (no TPM
// reachable; tpmErr says why). Problems reading the TPM are reported in
// the result, not as errors.
func (s *Sysroot) TPMStatus(ctx context.Context, t transport.TPM, tpmErr error) (*TPMStatus, error) {
	ts, err := LoadTPM(s.root)
	if err != nil {
		return nil, err
	}
	st := &TPMStatus{Mode: cmdline.TPMOff, PCRs: []int{}, MeasurePCR: tpm.DefaultMeasurePCR, Sealed: []string{}}
	if ts != nil {
		st.Mode, st.PCRs, st.MeasurePCR = ts.Config.Mode, ts.Config.PCRs, ts.Config.MeasurePCR
		st.Enrolled = ts.Enrollment != nil
	}
	if booted, err := s.booted(); err == nil && booted != nil {
		if m, _, _, err := s.readDeploymentCommit(*booted); err == nil {
			st.BootedDigest = m.Image.Digest.String()
		}
	}
	deps, err := s.listDeployments()
	if err != nil {
		return nil, err
	}
	for _, d := range deps {
		if _, err := os.Lstat(filepath.Join(s.deployDir(d), TPMBlobFile)); err == nil {
			st.Sealed = append(st.Sealed, d.Path())
		}
	}
	if t == nil {
		if tpmErr != nil {
			st.Error = tpmErr.Error()
		}
		return st, nil
	}
	var errs []error
	if v, err := tpm.ReadPCRs(t, []int{st.MeasurePCR}); err == nil {
		st.Reachable = true
		st.MeasuredPCRValue = hex.EncodeToString(v[st.MeasurePCR])
	} else {
		errs = append(errs, err)
	}
	if st.Enrolled {
		if c, err := tpm.ReadCounter(t, ts.Enrollment); err == nil {
			st.Reachable = true
			st.Counter = &c
		} else {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		st.Error = err.Error()
	}
	return st, nil
}
