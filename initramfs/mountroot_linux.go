package initramfs

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/tpm"
)

// Options configures MountRoot. The zero value of every field but Cmdline
// and OpenTPM is the real boot's default.
type Options struct {
	// Cmdline is the kernel command line (the CLI reads /proc/cmdline).
	Cmdline string
	// PhysicalRoot, if set, is the physical root, already mounted; it is
	// used as it is. Otherwise see MountRoot.
	PhysicalRoot string
	Sysroot      string // where the root is mounted (default /sysroot)
	RunDir       string // the run directory (default /run)
	KeysDir      string // trusted.d, revoked.d, tpm/enrollment.json (default /etc/cfs)
	Config       Config // the configuration (LoadConfig); zero: DefaultConfig
	// OpenTPM opens the TPM. An error matching tpm.ErrNoTPM means there is
	// none; nil OpenTPM means the same.
	OpenTPM func() (transport.TPMCloser, error)
	// DeviceTimeout bounds the wait for the root= device (default 30 s).
	DeviceTimeout time.Duration
	Logger        *slog.Logger // nil discards
}

// Bounds on the files read from the (untrusted) physical root.
const (
	maxCommitSize = sign.MaxPayloadSize
	maxSigSize    = sign.MaxEnvelopeSize
	maxBlobSize   = 64 << 10
	maxEnrollSize = 64 << 10
)

type booter struct {
	o    Options
	log  *slog.Logger
	dep  string // the deployment path, for errors
	undo []undoStep
}

type undoStep struct {
	what string
	f    func() error
}

func (b *booter) push(what string, f func() error) { b.undo = append(b.undo, undoStep{what, f}) }

// rollback undoes every recorded step, last first.
func (b *booter) rollback() error {
	var errs []error
	for i := len(b.undo) - 1; i >= 0; i-- {
		if err := b.undo[i].f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.undo[i].what, err))
		}
	}
	b.undo = nil
	return errors.Join(errs...)
}

func (b *booter) fail(check string, err error) error {
	return &CheckError{Check: check, Deployment: b.dep, Err: err}
}

func (b *booter) mismatch(check, expected, actual string, err error) error {
	return &CheckError{Check: check, Deployment: b.dep, Expected: expected, Actual: actual, Err: err}
}

// MountRoot verifies the deployment named on the kernel command line and
// mounts its composefs root at the sysroot (see the package documentation
// for the checks). The physical root is o.PhysicalRoot when set; else the
// mount systemd's sysroot.mount made on the sysroot (root=), moved aside to
// <run>/cfs/physical; else root= (rootfstype=, rootflags=) mounted
// read-only there. On success the deployment's etc/ is bound on /etc and
// the stateroot's var/ on /var (both writable), <run>/cfs/booted.json
// records the boot and, with a TPM, the measure PCR has been extended.
// On failure the error is a *CheckError and nothing stays mounted.
func MountRoot(ctx context.Context, o Options) (rec *Record, err error) {
	if o.Sysroot == "" {
		o.Sysroot = DefaultSysroot
	}
	if o.RunDir == "" {
		o.RunDir = DefaultRunDir
	}
	if o.KeysDir == "" {
		o.KeysDir = DefaultKeysDir
	}
	if o.Config == (Config{}) {
		o.Config = DefaultConfig()
	}
	if o.DeviceTimeout == 0 {
		o.DeviceTimeout = 30 * time.Second
	}
	b := &booter{o: o, log: o.Logger}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			rec = nil
			if uerr := b.rollback(); uerr != nil {
				err = fmt.Errorf("%w (cleaning up: %v)", err, uerr)
			}
		}
	}()
	start := time.Now()
	rec, err = b.run(ctx)
	if err == nil {
		b.log.Info("root mounted", "deployment", rec.Deployment, "commit", rec.Commit, "digest", rec.ImageDigest, "verity", rec.Verity, "elapsed", time.Since(start))
	}
	return rec, err
}

func (b *booter) run(ctx context.Context) (*Record, error) {
	o := b.o
	// 1. The kernel command line and the effective policy.
	args := cmdline.Split(o.Cmdline)
	boot, err := cmdline.ParseBoot(args)
	if err != nil {
		var ie *cmdline.InvalidError
		if errors.As(err, &ie) && ie.Param == cmdline.ParamDeployment {
			b.dep = ie.Value
			if strings.ContainsFunc(ie.Value, unicode.IsControl) {
				b.dep = strconv.Quote(ie.Value) // the message goes to the console
			}
			return nil, b.fail(CheckPath, err)
		}
		return nil, b.fail(CheckCmdline, err)
	}
	if boot.Deployment == "" {
		return nil, b.fail(CheckCmdline, errors.New("no cfs.deployment= argument"))
	}
	b.dep = boot.Deployment
	if boot.Composefs == nil {
		return nil, b.fail(CheckCmdline, errors.New("no composefs= argument"))
	}
	d, err := deploy.ParseDeploymentPath(boot.Deployment)
	if err != nil {
		return nil, b.fail(CheckPath, err)
	}
	if boot.Composefs.Algorithm != cmdline.SHA256 {
		return nil, b.mismatch(CheckCmdlineHash, "a sha256 digest (64 hex characters)", "a "+string(boot.Composefs.Algorithm)+" digest", errors.New("cfs images are named by SHA-256 fs-verity digests"))
	}
	pol, err := o.Config.Effective(args)
	if err != nil {
		return nil, b.fail(CheckCmdline, err)
	}
	b.log.Info("policy", "verity", pol.Verity, "tpm", pol.TPM, "threshold", pol.Threshold, "deployment", d.Path())

	// Trust anchors, from the initramfs, before touching the disk.
	trust, err := loadTrust(o.KeysDir, pol.Threshold)
	if err != nil {
		return nil, b.fail(CheckKeys, err)
	}
	var enr *tpm.Enrollment
	if pol.TPM != cmdline.TPMOff {
		enr, err = loadEnrollment(filepath.Join(o.KeysDir, EnrollmentFile))
		if err != nil {
			return nil, b.fail(CheckTPM, err)
		}
		if enr == nil && pol.TPM == cmdline.TPMRequired {
			return nil, b.fail(CheckTPM, fmt.Errorf("tpm mode required but no TPM enrollment in the initramfs (%s)", filepath.Join(o.KeysDir, EnrollmentFile)))
		}
	}

	// 2. The physical root and the deployment beneath it.
	phys, owned, err := b.physicalRoot(ctx, boot)
	if err != nil {
		return nil, b.fail(CheckPhysical, err)
	}
	root, err := unix.Open(phys, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, b.fail(CheckPhysical, fmt.Errorf("open %s: %w", phys, err))
	}
	defer unix.Close(root)
	rel := d.Path()[1:]
	dfd, err := openBeneath(root, rel)
	if err != nil {
		return nil, b.fail(CheckPath, fmt.Errorf("%s beneath the physical root %s: %w", d.Path(), phys, err))
	}
	defer unix.Close(dfd)
	varRel := path.Join(deploy.DeployDir, d.Stateroot, "var")
	objRel := path.Join(deploy.RepoDir, "objects")
	for _, p := range []string{path.Join(rel, deploy.EtcDir), varRel, objRel} {
		fd, err := openBeneath(root, p)
		if err != nil {
			return nil, b.fail(CheckPath, fmt.Errorf("/%s beneath the physical root %s: %w", p, phys, err))
		}
		unix.Close(fd)
	}

	// 3. The signed commit.
	canonical, err := readBeneath(dfd, deploy.CommitFile, maxCommitSize)
	if err != nil {
		return nil, b.fail(CheckSignature, fmt.Errorf("commit metadata: %w", err))
	}
	if got := commit.IDOf(canonical); got != d.Commit {
		return nil, b.mismatch(CheckSignature, "commit id "+d.Commit.String(), "commit id "+got.String(), errors.New("the deployment's commit metadata does not hash to the commit id in its name"))
	}
	envelope, err := readBeneath(dfd, deploy.SignatureFile, maxSigSize)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, b.fail(CheckSignature, fmt.Errorf("signature: %w", err))
	}
	vr, err := pull.VerifyCommit(canonical, envelope, trust)
	if err != nil {
		return nil, b.mismatch(CheckSignature, fmt.Sprintf("%d valid signature(s) by trusted, non-revoked keys", pol.Threshold), "none that count", err)
	}
	m, err := commit.Parse(canonical)
	if err != nil {
		return nil, b.fail(CheckSignature, err)
	}
	keyIDs := make([]string, len(vr.KeyIDs))
	for i, k := range vr.KeyIDs {
		keyIDs[i] = k.String()
	}
	b.log.Info("signature verified", "commit", d.Commit.String(), "keys", keyIDs, "version", m.Version)

	// 4. The command line against the signature.
	if subtle.ConstantTimeCompare(boot.Composefs.SHA256[:], m.Image.Digest[:]) != 1 {
		return nil, b.mismatch(CheckCmdlineHash, "composefs="+m.Image.Digest.String()+" (signed)", "composefs="+boot.Composefs.SHA256.String(), nil)
	}
	if boot.Commit != nil && *boot.Commit != d.Commit {
		return nil, b.mismatch(CheckCmdlineHash, "cfs.commit="+d.Commit.String(), "cfs.commit="+boot.Commit.String(), nil)
	}

	rec := &Record{
		Deployment:    d.Path(),
		Stateroot:     d.Stateroot,
		Commit:        d.Commit.String(),
		ImageDigest:   m.Image.Digest.String(),
		Version:       m.Version,
		RollbackIndex: m.RollbackIndex,
		KeyIDs:        keyIDs,
		PhysicalRoot:  phys,
		Sysroot:       o.Sysroot,
		TPM:           TPMRecord{Mode: string(pol.TPM), Enrolled: enr != nil},
	}

	// 5. The TPM.
	t, err := b.checkTPM(pol.TPM, enr, dfd, d, m, &rec.TPM)
	if err != nil {
		return nil, err
	}
	if t != nil {
		defer t.Close()
	}

	// 6, 7. Image digest, objects, mount.
	mo := mount.Options{
		BaseDirs:       []string{filepath.Join(phys, objRel)},
		ExpectedDigest: &m.Image.Digest,
		TempDir:        filepath.Join(o.RunDir, RunCfsDir),
		Logger:         b.log,
	}
	switch pol.Verity {
	case VerityRequire:
		mo.Verify, rec.Verity = mount.VerifyKernel, "kernel"
	case VerityObjects:
		mo.Verify, rec.Verity = mount.VerifyObjects, "objects"
	default:
		mo.Verify, rec.Verity = mount.VerifyNone, "none"
	}
	if err := os.MkdirAll(mo.TempDir, 0o755); err != nil {
		return nil, b.fail(CheckMount, err)
	}
	image := filepath.Join(phys, rel, deploy.ImageFile)
	if err := mount.Mount(context.WithoutCancel(ctx), image, o.Sysroot, mo); err != nil {
		return nil, b.mountError(err, m.Image.Digest)
	}
	sysroot := o.Sysroot
	b.push("unmount "+sysroot, func() error { return unix.Unmount(sysroot, unix.MNT_DETACH) })
	b.log.Info("composefs mounted", "image", image, "sysroot", sysroot, "verity", rec.Verity)

	// 8. Writable /etc and /var.
	if owned {
		if err := makeWritable(phys); err != nil {
			return nil, b.fail(CheckMount, err)
		}
	}
	for _, bind := range []struct{ src, dst string }{
		{filepath.Join(phys, rel, deploy.EtcDir), filepath.Join(sysroot, "etc")},
		{filepath.Join(phys, varRel), filepath.Join(sysroot, "var")},
	} {
		if st, err := os.Lstat(bind.dst); err != nil || !st.IsDir() {
			return nil, b.fail(CheckMount, fmt.Errorf("the image has no directory %s to bind %s on", bind.dst[len(sysroot):], bind.src))
		}
		if err := unix.Mount(bind.src, bind.dst, "", unix.MS_BIND, ""); err != nil {
			return nil, b.fail(CheckMount, fmt.Errorf("bind %s on %s: %w", bind.src, bind.dst, err))
		}
		dst := bind.dst
		b.push("unmount "+dst, func() error { return unix.Unmount(dst, unix.MNT_DETACH) })
	}
	if owned {
		if err := makeReadOnly(phys); err != nil {
			return nil, b.fail(CheckMount, err)
		}
	}

	// Record, then measure (the latch), then record again.
	if err := writeRecord(o.RunDir, rec); err != nil {
		return nil, b.fail(CheckMount, fmt.Errorf("write the boot record: %w", err))
	}
	recPath := filepath.Join(o.RunDir, RunCfsDir, BootedFile)
	b.push("remove "+recPath, func() error { return os.Remove(recPath) })
	if enr != nil {
		enrPath := filepath.Join(o.RunDir, RunCfsDir, RunEnrollmentFile)
		eb, err := enr.Marshal()
		if err == nil {
			err = atomicfile.WriteFile(enrPath, eb, 0o644)
		}
		if err != nil {
			return nil, b.fail(CheckMount, fmt.Errorf("record the enrollment: %w", err))
		}
		b.push("remove "+enrPath, func() error { return os.Remove(enrPath) })
	}
	if t != nil {
		if err := b.measure(t, enr, rec, pol.TPM); err != nil {
			return nil, err
		}
		if err := writeRecord(o.RunDir, rec); err != nil {
			return nil, b.fail(CheckMeasure, fmt.Errorf("write the boot record: %w", err))
		}
	}
	b.undo = nil // committed
	return rec, nil
}

// mountError classifies an error of mount.Mount.
func (b *booter) mountError(err error, want fsverity.Digest) error {
	var dm *mount.DigestMismatchError
	switch {
	case errors.Is(err, mount.ErrObject):
		var oe *mount.ObjectError
		if errors.As(err, &oe) && errors.As(err, &dm) {
			return b.mismatch(CheckObjects, "object "+oe.Object+" with digest "+dm.Expected.String(), "content with digest "+dm.Found.String(), err)
		}
		return b.fail(CheckObjects, err)
	case errors.As(err, &dm):
		return b.mismatch(CheckImage, "image digest "+want.String()+" (signed)", "image digest "+dm.Found.String(), err)
	case errors.Is(err, mount.ErrVerityUnsupported):
		return b.fail(CheckVerity, fmt.Errorf("%w (verity = require; on machines without fs-verity set verity = objects in the initramfs configuration to check every object in user space)", err))
	case errors.Is(err, unix.EIO):
		// The image has fs-verity (its measurement matched the signed
		// digest) but a block of it does not: the kernel refuses to read
		// it. The file was changed on disk under fs-verity.
		return b.mismatch(CheckImage, "image content matching its fs-verity digest "+want.String()+" (signed)",
			"a block the kernel's fs-verity refuses to read (EIO): the image file was modified on disk", err)
	case errors.Is(err, mount.ErrNotComposefs):
		return b.fail(CheckImage, err)
	}
	return b.fail(CheckMount, err)
}

// checkTPM runs the TPM check of the mode and returns the open TPM (nil
// when there is none or the mode is off).
func (b *booter) checkTPM(mode cmdline.TPMMode, enr *tpm.Enrollment, dfd int, d deploy.Deployment, m *commit.Metadata, tr *TPMRecord) (transport.TPMCloser, error) {
	if mode == cmdline.TPMOff {
		tr.Note = "TPM off: signature checks only, no anti-rollback counter, no measurement"
		b.log.Warn(tr.Note)
		return nil, nil
	}
	var t transport.TPMCloser
	err := tpm.ErrNoTPM
	if b.o.OpenTPM != nil {
		t, err = b.o.OpenTPM()
	}
	if err != nil {
		if errors.Is(err, tpm.ErrNoTPM) && mode == cmdline.TPMIfPresent {
			tr.Note = "no TPM (mode if-present): booting with signature checks only, no anti-rollback counter, no measurement"
			b.log.Warn(tr.Note, "err", err)
			return nil, nil
		}
		return nil, b.mismatch(CheckTPM, "a TPM (mode "+string(mode)+")", "none reachable", err)
	}
	tr.Present = true
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	if enr == nil {
		// if-present without an enrollment: measure only.
		tr.Note = "TPM present but not enrolled in the initramfs: no sealed-digest or anti-rollback check"
		b.log.Warn(tr.Note)
		ok = true
		return t, nil
	}
	blob, err := readBeneath(dfd, deploy.TPMBlobFile, maxBlobSize)
	if errors.Is(err, fs.ErrNotExist) && mode == cmdline.TPMIfPresent {
		// Sealed only when a TPM was reachable at switch time; the
		// counter still guards against rollback.
		counter, cerr := tpm.ReadCounter(t, enr)
		if cerr != nil {
			return nil, b.fail(CheckTPM, fmt.Errorf("read the anti-rollback counter: %w", cerr))
		}
		tr.Counter = &counter
		if m.RollbackIndex < counter {
			return nil, b.mismatch(CheckRollback, fmt.Sprintf("rollback index >= %d (TPM counter)", counter), fmt.Sprintf("rollback index %d", m.RollbackIndex), nil)
		}
		tr.Note = "deployment not sealed (no tpm.blob, mode if-present): anti-rollback counter checked, digest not bound to the TPM"
		b.log.Warn(tr.Note)
		ok = true
		return t, nil
	}
	if err != nil {
		return nil, b.fail(CheckTPM, fmt.Errorf("sealed blob %s: %w", deploy.TPMBlobFile, err))
	}
	p, err := tpm.Unseal(t, enr, blob, tpm.Expectation{ImageDigest: m.Image.Digest, CommitID: d.Commit, RollbackIndex: m.RollbackIndex})
	if err != nil {
		var re *tpm.RollbackError
		var pe *tpm.PCRMismatchError
		switch {
		case errors.As(err, &re):
			return nil, b.mismatch(CheckRollback, fmt.Sprintf("rollback index >= %d (TPM counter)", re.Counter), fmt.Sprintf("rollback index %d", re.RollbackIndex), err)
		case errors.As(err, &pe):
			return nil, b.fail(CheckTPM, fmt.Errorf("the sealed digest does not unseal in this boot state: %w", err))
		}
		return nil, b.fail(CheckTPM, fmt.Errorf("unseal %s: %w", deploy.TPMBlobFile, err))
	}
	if subtle.ConstantTimeCompare(p.ImageDigest[:], m.Image.Digest[:]) != 1 {
		// Unseal compared it already; a second look costs nothing.
		return nil, b.mismatch(CheckTPM, "sealed digest "+m.Image.Digest.String(), "sealed digest "+fsverity.Digest(p.ImageDigest).String(), nil)
	}
	tr.Unsealed = true
	if counter, err := tpm.ReadCounter(t, enr); err == nil {
		tr.Counter = &counter
	}
	b.log.Info("sealed digest unsealed from the TPM", "digest", m.Image.Digest.String(), "rollback-index", m.RollbackIndex)
	ok = true
	return t, nil
}

// measure extends the measure PCR with the root's identity; in required
// mode a failure stops the boot, otherwise it is noted in the record.
func (b *booter) measure(t transport.TPM, enr *tpm.Enrollment, rec *Record, mode cmdline.TPMMode) error {
	if err := measureRecord(t, enr, rec, b.o.RunDir); err != nil {
		if mode == cmdline.TPMRequired {
			return b.fail(CheckMeasure, err)
		}
		rec.TPM.Note = err.Error()
		b.log.Warn(rec.TPM.Note)
		return nil
	}
	b.log.Info("measured", "pcr", rec.TPM.MeasurePCR, "event", rec.TPM.Event)
	return nil
}

// loadTrust loads the trusted and revoked keys built into the initramfs.
func loadTrust(dir string, threshold int) (*sign.TrustStore, error) {
	trusted := filepath.Join(dir, TrustedDir)
	keys, err := filepath.Glob(filepath.Join(trusted, "*.pub"))
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no trusted keys (%s/*.pub): nothing could verify a commit", trusted)
	}
	opts := sign.TrustOptions{Threshold: threshold}
	if st, err := os.Stat(filepath.Join(dir, RevokedDir)); err == nil && st.IsDir() {
		opts.RevokedDir = filepath.Join(dir, RevokedDir)
	}
	return sign.LoadTrustStore(trusted, opts)
}

// loadEnrollment reads the enrollment built into the initramfs; nil when
// there is none.
func loadEnrollment(p string) (*tpm.Enrollment, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEnrollSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxEnrollSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxEnrollSize)
	}
	enr, err := tpm.ParseEnrollment(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return enr, nil
}

// openBeneath opens the directory rel beneath root without following
// symbolic links, without crossing mount points and without "..".
func openBeneath(root int, rel string) (int, error) {
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("a symbolic link on the way: %w", err)
	case errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("leaves the physical root's file system: %w", err)
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("does not exist: %w", fs.ErrNotExist)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("not a directory: %w", err)
	}
	return -1, err
}

// readBeneath reads the regular file name in dir (no symbolic link), at
// most limit bytes.
func readBeneath(dir int, name string, limit int64) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", name, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", name, limit)
	}
	return b, nil
}
