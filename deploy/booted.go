package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/deploy/bls"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// BootedRecord is <run>/cfs/booted.json, written by the initramfs once it
// has mounted a deployment. Only Deployment is read here.
type BootedRecord struct {
	// Deployment is the cfs.deployment= path that was booted.
	Deployment string `json:"deployment"`
}

// booted returns the deployment the running system booted, or nil: from
// <run>/cfs/booted.json if present, else from the cfs.deployment=
// argument of the kernel command line (the Cmdline override, or
// /proc/cmdline when the sysroot is "/").
func (s *Sysroot) booted() (*Deployment, error) {
	b, err := os.ReadFile(filepath.Join(s.runDir, RunCfsDir, BootedFile))
	switch {
	case err == nil:
		var rec BootedRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%s: %w", BootedFile, err)
		}
		d, err := ParseDeploymentPath(rec.Deployment)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", BootedFile, err)
		}
		return &d, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	var line string
	switch {
	case s.cmdline != nil:
		line = *s.cmdline
	case s.root == "/":
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return nil, nil
		}
		line = string(b)
	default:
		return nil, nil
	}
	boot, err := cmdline.ParseBoot(cmdline.Split(line))
	if err != nil {
		return nil, fmt.Errorf("kernel command line: %w", err)
	}
	if boot.Deployment == "" {
		return nil, nil
	}
	d, err := ParseDeploymentPath(boot.Deployment)
	if err != nil {
		return nil, fmt.Errorf("kernel command line: %w", err)
	}
	return &d, nil
}

// StagedRecord is <run>/cfs/staged.json: a deployment that `switch
// --stage` completed, whose entry `finalize` installs at shutdown. It lives
// in the run directory so that a reboot without finalize forgets it (the
// deployment directory is then removed by cleanup).
type StagedRecord struct {
	Deployment string     `json:"deployment"` // cfs.deployment= path
	Entry      StagedBoot `json:"entry"`
}

// StagedBoot is the boot entry finalize writes (its serial, file name and
// machine-id are chosen at finalize).
type StagedBoot struct {
	Title   string   `json:"title"`
	Linux   string   `json:"linux"`
	Initrd  []string `json:"initrd,omitempty"`
	Options string   `json:"options"`
}

func (s *Sysroot) stagedPath() string { return filepath.Join(s.runDir, RunCfsDir, StagedFile) }

// readStaged returns the staged record, or nil.
func (s *Sysroot) readStaged() (*StagedRecord, *Deployment, error) {
	b, err := os.ReadFile(s.stagedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var rec StagedRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.stagedPath(), err)
	}
	d, err := ParseDeploymentPath(rec.Deployment)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.stagedPath(), err)
	}
	return &rec, &d, nil
}

func (s *Sysroot) writeStaged(rec *StagedRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := mkdirDurable(filepath.Dir(s.stagedPath())); err != nil {
		return err
	}
	return atomicfile.WriteFile(s.stagedPath(), append(b, '\n'), 0o644)
}

func (s *Sysroot) removeStaged() error {
	if err := os.Remove(s.stagedPath()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(s.stagedPath()))
}

func (r *StagedRecord) entry() *bls.Entry {
	return &bls.Entry{
		Title:   r.Entry.Title,
		SortKey: SortKey,
		Linux:   r.Entry.Linux,
		Initrd:  r.Entry.Initrd,
		Options: []string{r.Entry.Options},
	}
}
