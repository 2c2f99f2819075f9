package initramfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"path/filepath"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/tpm"
)

// ErrNotBooted: there is no <run>/cfs/booted.json (the system was not
// booted through cfs-initramfs mount-root).
var ErrNotBooted = errors.New("not booted by cfs (no boot record)")

func readRunRecord(runDir string) (*Record, error) {
	rec, err := ReadRecord(runDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotBooted, filepath.Join(runDir, RunCfsDir, BootedFile))
	}
	return rec, err
}

// Measure extends the measure PCR with the booted root's identity when
// mount-root has not done it (the TPM was not reachable then, or the record
// says it was not measured), and updates the record. It does nothing when
// the record says it was measured already: measuring twice would move the
// PCR away from what a verifier replaying the log expects.
func Measure(ctx context.Context, runDir string, t transport.TPM) (*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rec, err := readRunRecord(runDir)
	if err != nil {
		return nil, err
	}
	if rec.TPM.Measured {
		return rec, nil
	}
	enr, err := loadEnrollment(filepath.Join(runDir, RunCfsDir, RunEnrollmentFile))
	if err != nil {
		return nil, err
	}
	if err := measureRecord(t, enr, rec, runDir); err != nil {
		return nil, err
	}
	if err := writeRecord(runDir, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// measureRecord extends the enrollment's measure PCR (PCR 15 without one)
// with the event of the booted root rec describes, logs it under runDir,
// and marks rec measured.
func measureRecord(t transport.TPM, enr *tpm.Enrollment, rec *Record, runDir string) error {
	pcr := tpm.DefaultMeasurePCR
	if enr != nil {
		pcr = enr.MeasurePCR
	}
	digest, err := fsverity.ParseDigest(rec.ImageDigest)
	if err != nil {
		return fmt.Errorf("boot record: image digest: %w", err)
	}
	id, err := commit.ParseID(rec.Commit)
	if err != nil {
		return fmt.Errorf("boot record: commit: %w", err)
	}
	keyID := ""
	if len(rec.KeyIDs) > 0 {
		keyID = rec.KeyIDs[0]
	}
	event, err := tpm.RootEvent("sha256", digest, id, keyID)
	if err != nil {
		return err
	}
	if err := tpm.Measure(t, pcr, event, filepath.Join(runDir, MeasureLog)); err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	rec.TPM.Present, rec.TPM.MeasurePCR, rec.TPM.Measured, rec.TPM.Event = true, pcr, true, event
	return nil
}

// BlessResult describes a bless.
type BlessResult struct {
	Deployment    string `json:"deployment"`
	RollbackIndex uint64 `json:"rollback-index"`
	// Counter is the anti-rollback counter before and after.
	Before uint64 `json:"counter-before"`
	After  uint64 `json:"counter-after"`
	// Skipped says why nothing was done (not enrolled, TPM off).
	Skipped string `json:"skipped,omitempty"`
}

// Bless raises the TPM anti-rollback counter to the booted commit's
// rollback index, once the boot is known good (after boot-complete.target).
// The index and the enrollment are the ones the initramfs verified and left
// in the run directory. It never lowers the counter. Without an enrollment
// or with the TPM off there is nothing to do; that is not an error.
func Bless(ctx context.Context, runDir string, open func() (transport.TPMCloser, error)) (*BlessResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rec, err := readRunRecord(runDir)
	if err != nil {
		return nil, err
	}
	res := &BlessResult{Deployment: rec.Deployment, RollbackIndex: rec.RollbackIndex}
	enr, err := loadEnrollment(filepath.Join(runDir, RunCfsDir, RunEnrollmentFile))
	if err != nil {
		return nil, err
	}
	if enr == nil || rec.TPM.Mode == string(cmdline.TPMOff) {
		res.Skipped = "no TPM enrollment was used for this boot"
		return res, nil
	}
	if !rec.TPM.Present {
		res.Skipped = "no TPM was present at boot"
		return res, nil
	}
	t, err := open()
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if res.Before, err = tpm.ReadCounter(t, enr); err != nil {
		return nil, fmt.Errorf("read the anti-rollback counter: %w", err)
	}
	if err := tpm.Bless(t, enr, rec.RollbackIndex); err != nil {
		return nil, err
	}
	if res.After, err = tpm.ReadCounter(t, enr); err != nil {
		return nil, fmt.Errorf("read the anti-rollback counter: %w", err)
	}
	rec.TPM.Blessed = true
	rec.TPM.Counter = &res.After
	if err := writeRecord(runDir, rec); err != nil {
		return nil, err
	}
	return res, nil
}

// Status returns the boot record.
func Status(runDir string) (*Record, error) {
	return readRunRecord(runDir)
}
