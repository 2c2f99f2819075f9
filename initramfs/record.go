package initramfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// Record is <run>/cfs/booted.json: what the initramfs verified and
// mounted. cfs-deploy reads "deployment" to know the booted deployment;
// bless reads "rollback-index".
type Record struct {
	Deployment    string   `json:"deployment"` // the cfs.deployment= path
	Stateroot     string   `json:"stateroot"`
	Commit        string   `json:"commit"`
	ImageDigest   string   `json:"image-digest"`
	Version       string   `json:"version,omitempty"`
	RollbackIndex uint64   `json:"rollback-index"`
	KeyIDs        []string `json:"key-ids"` // the trusted keys whose signatures were valid
	// Verity is how objects are verified: "kernel" (fs-verity enforced by
	// overlayfs), "objects" (hashed in user space before the mount) or
	// "none".
	Verity       string    `json:"verity"`
	PhysicalRoot string    `json:"physical-root"`
	Sysroot      string    `json:"sysroot"`
	TPM          TPMRecord `json:"tpm"`
}

// TPMRecord says what the TPM did in this boot.
type TPMRecord struct {
	Mode     string `json:"mode"`     // effective cfs.tpm mode
	Present  bool   `json:"present"`  // a TPM answered
	Enrolled bool   `json:"enrolled"` // an enrollment was built into the initramfs
	// Unsealed: the deployment's sealed blob unsealed to the signed
	// digest, commit and rollback index.
	Unsealed bool `json:"unsealed"`
	// Counter is the anti-rollback counter (relative to the enrollment's
	// base) when it was read.
	Counter    *uint64 `json:"counter,omitempty"`
	MeasurePCR int     `json:"measure-pcr,omitempty"`
	Measured   bool    `json:"measured"`
	Event      string  `json:"event,omitempty"` // the measured event
	Blessed    bool    `json:"blessed,omitempty"`
	// Note explains a reduced check (no TPM, not enrolled, not sealed).
	Note string `json:"note,omitempty"`
}

// ReadRecord reads <runDir>/cfs/booted.json.
func ReadRecord(runDir string) (*Record, error) {
	b, err := os.ReadFile(filepath.Join(runDir, RunCfsDir, BootedFile))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", BootedFile, err)
	}
	return &r, nil
}

// writeRecord writes <runDir>/cfs/booted.json atomically.
func writeRecord(runDir string, r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Join(runDir, RunCfsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, BootedFile), append(b, '\n'), 0o644)
}
