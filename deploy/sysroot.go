package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/lockfile"
)

// Layout of a sysroot, relative to its root (see docs/deployments.md).
const (
	CfsDir      = "cfs"
	RepoDir     = "cfs/repo"      // the cfs repository; its objects/ is the overlay data directory
	TrustedDir  = "cfs/trusted.d" // *.pub: keys whose signatures are accepted
	RevokedDir  = "cfs/revoked.d" // *.pub: revoked keys
	ConfigFile  = "cfs/config"    // JSON Config
	LockFile    = "cfs/lock"      // the deploy lock (flock)
	TmpDir      = "cfs/tmp"       // scratch space of the running operation
	DeployDir   = "cfs/deploy"    // <stateroot>/deploy/<commit>.<serial>/, <stateroot>/var/
	BootDir     = "boot"          // the boot partition (or a directory of the root file system)
	BootFiles   = "cfs"           // under BootDir: <stateroot>/<content name>/vmlinuz, initramfs.img
	EntriesDir  = "loader/entries"
	EntriesNew  = "loader/entries.new"
	RunCfsDir   = "cfs"         // under the run directory
	StagedFile  = "staged.json" // under <run>/cfs: the staged deployment
	BootedFile  = "booted.json" // under <run>/cfs: written by the initramfs
	stagingPref = ".new-"       // staging directories and files, removed by recovery
)

// Files of a deployment directory.
const (
	ImageFile     = "image.cfs"  // the regenerated composefs image
	EtcDir        = "etc"        // the merged, writable /etc
	OriginFile    = "origin"     // key=value: what the deployment follows
	CommitFile    = "commit"     // copy of the canonical commit metadata
	SignatureFile = "commit.sig" // copy of its signature envelope
	PinnedFile    = "pinned"     // present when the deployment is pinned
)

// ConfigFormat is the version of the sysroot config this package writes.
const ConfigFormat = 1

// Config is the sysroot's cfs/config file.
type Config struct {
	Format int `json:"format"`
	// Stateroot is the default stateroot of switch (the one init made
	// first).
	Stateroot string `json:"stateroot"`
	// Threshold is how many distinct trusted keys must sign a commit.
	Threshold int `json:"threshold"`
}

// Sysroot is an opened sysroot: the physical root file system that holds
// the repository, the deployments and (under boot/) the boot partition.
type Sysroot struct {
	root    string
	runDir  string
	cfg     Config
	repo    *repo.Repo
	log     *slog.Logger
	hooks   Hooks
	cmdline *string
	workers int
}

// OpenOptions configures Open.
type OpenOptions struct {
	// RunDir is the runtime directory holding cfs/booted.json and
	// cfs/staged.json. Empty means /run for the sysroot "/" and
	// <sysroot>/run otherwise.
	RunDir string
	// Cmdline, if set, replaces /proc/cmdline when finding the booted
	// deployment (tests; the CLI's hidden --cmdline).
	Cmdline *string
	// Hooks are called at the steps of write operations.
	Hooks Hooks
	// Workers verifying objects in parallel; 0 means GOMAXPROCS.
	Workers int
	// Logger for debug records; nil discards.
	Logger *slog.Logger
}

// Hooks let callers observe and interrupt write operations.
type Hooks struct {
	// Step is called after each named step of a write operation (see
	// Steps). A non-nil error aborts the operation there, which then
	// rolls back like on any other failure. The CLI uses it for the
	// CFS_TEST_CRASH_AT crash test hook.
	Step func(step string) error
	// PreSwap is called once a new default deployment and its boot
	// files are complete and durable, right before the boot entries are
	// swapped (for a staged deployment: at finalize). It is the seam for
	// TPM sealing; an error aborts the operation and nothing changes.
	PreSwap func(ctx context.Context, p *PreSwap) error
}

// Steps lists, in order, the names Hooks.Step is called with during a
// switch. StepStaged is reached only with --stage (which stops there);
// finalize runs StepPreSwap to StepDone; rollback and cleanup run
// StepEntryWritten to StepDone.
var Steps = []string{
	StepVerified, StepImageWritten, StepEtcMerged, StepDeploymentWritten,
	StepDeploymentPublished, StepBootFilesWritten, StepStaged, StepPreSwap,
	StepEntryWritten, StepEntriesWritten, StepEntriesSwapped, StepDone,
}

// Step names.
const (
	StepVerified            = "verified"             // signature, dump and objects checked; staging directory made
	StepImageWritten        = "image-written"        // image regenerated into the staging directory, digest checked
	StepEtcMerged           = "etc-merged"           // /etc merged into the staging directory
	StepDeploymentWritten   = "deployment-written"   // origin, commit copy written and synced
	StepDeploymentPublished = "deployment-published" // staging directory renamed to its final name
	StepBootFilesWritten    = "boot-files-written"   // kernel and initramfs on the boot partition
	StepStaged              = "staged"               // (--stage only) staged record written
	StepPreSwap             = "pre-swap"             // PreSwap hook done
	StepEntryWritten        = "entry-written"        // first file of loader/entries.new written
	StepEntriesWritten      = "entries-written"      // loader/entries.new complete and synced
	StepEntriesSwapped      = "entries-swapped"      // entries.new exchanged with entries
	StepDone                = "done"                 // old entries removed
)

// InitOptions configures Init.
type InitOptions struct {
	// Stateroot to create (required).
	Stateroot string
	// TrustedKeys is a directory of *.pub keys copied into the sysroot's
	// trust store. Required the first time; later it replaces the
	// trusted keys.
	TrustedKeys string
	// RevokedKeys, optional, is a directory of revoked *.pub keys copied
	// into cfs/revoked.d.
	RevokedKeys string
	// Threshold of distinct trusted signatures (0 = 1). Only used when
	// the config is created.
	Threshold int
}

// Init prepares root as a sysroot: the repository, the trust store, the
// config, and the stateroot's directories. It can be run again to add a
// stateroot or replace the trusted keys; the default stateroot stays the
// first one. Keys are checked before anything is written.
func Init(ctx context.Context, root string, opts InitOptions) error {
	if _, err := cmdline.ParseStateroot(opts.Stateroot); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, ConfigFile)
	_, statErr := os.Stat(cfgPath)
	exists := statErr == nil
	if !exists && opts.TrustedKeys == "" {
		return errors.New("init: trusted keys are required (--trusted-keys DIR)")
	}
	threshold := opts.Threshold
	if threshold <= 0 {
		threshold = 1
	}
	if opts.TrustedKeys != "" {
		if _, err := sign.LoadTrustStore(opts.TrustedKeys, sign.TrustOptions{Threshold: threshold}); err != nil {
			return fmt.Errorf("init: trusted keys: %w", err)
		}
	}
	if opts.RevokedKeys != "" {
		if _, err := os.ReadDir(opts.RevokedKeys); err != nil {
			return fmt.Errorf("init: revoked keys: %w", err)
		}
	}
	for _, d := range []string{CfsDir, TmpDir, TrustedDir, RevokedDir,
		filepath.Join(DeployDir, opts.Stateroot, "deploy"), filepath.Join(DeployDir, opts.Stateroot, "var"),
		filepath.Join(BootDir, "loader")} {
		if err := mkdirDurable(filepath.Join(root, d)); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	if _, err := repo.Init(filepath.Join(root, RepoDir)); err != nil {
		return fmt.Errorf("init: repository: %w", err)
	}
	if opts.TrustedKeys != "" {
		if err := syncKeyDir(opts.TrustedKeys, filepath.Join(root, TrustedDir)); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	if opts.RevokedKeys != "" {
		if err := syncKeyDir(opts.RevokedKeys, filepath.Join(root, RevokedDir)); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	if !exists {
		cfg := Config{Format: ConfigFormat, Stateroot: opts.Stateroot, Threshold: threshold}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := atomicfile.WriteFile(cfgPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	s, err := Open(root, OpenOptions{})
	if err != nil {
		return err
	}
	if _, err := s.trustStore(); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	return nil
}

// syncKeyDir makes dst hold exactly the *.pub files of src.
func syncKeyDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pub") || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
		want[e.Name()] = true
	}
	old, err := os.ReadDir(dst)
	if err != nil {
		return err
	}
	for _, e := range old {
		if strings.HasSuffix(e.Name(), ".pub") && !want[e.Name()] {
			if err := os.Remove(filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
	}
	return atomicfile.SyncDir(dst)
}

// Open opens a sysroot made by Init.
func Open(root string, opts OpenOptions) (*Sysroot, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(abs, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", abs, ErrNotSysroot, err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w: bad config: %v", abs, ErrNotSysroot, err)
	}
	if cfg.Format != ConfigFormat {
		return nil, fmt.Errorf("%s: %w: config format %d (this cfs reads %d)", abs, ErrNotSysroot, cfg.Format, ConfigFormat)
	}
	if _, err := cmdline.ParseStateroot(cfg.Stateroot); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", abs, ErrNotSysroot, err)
	}
	r, err := repo.Open(filepath.Join(abs, RepoDir))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	runDir := opts.RunDir
	if runDir == "" {
		if abs == "/" {
			runDir = "/run"
		} else {
			runDir = filepath.Join(abs, "run")
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sysroot{root: abs, runDir: runDir, cfg: cfg, repo: r, log: log, hooks: opts.Hooks, cmdline: opts.Cmdline, workers: opts.Workers}, nil
}

// Path returns the sysroot's root directory.
func (s *Sysroot) Path() string { return s.root }

// Repo returns the sysroot's repository.
func (s *Sysroot) Repo() *repo.Repo { return s.repo }

// Config returns the sysroot's configuration.
func (s *Sysroot) Config() Config { return s.cfg }

// TrustStore loads the sysroot's trust store (cfs/trusted.d, with
// cfs/revoked.d revoked, and the configured threshold).
func (s *Sysroot) TrustStore() (*sign.TrustStore, error) { return s.trustStore() }

func (s *Sysroot) trustStore() (*sign.TrustStore, error) {
	opts := sign.TrustOptions{Threshold: s.cfg.Threshold}
	if st, err := os.Stat(s.path(RevokedDir)); err == nil && st.IsDir() {
		opts.RevokedDir = s.path(RevokedDir)
	}
	t, err := sign.LoadTrustStore(s.path(TrustedDir), opts)
	if err != nil {
		return nil, fmt.Errorf("sysroot trust store: %w", err)
	}
	return t, nil
}

func (s *Sysroot) path(rel ...string) string {
	return filepath.Join(append([]string{s.root}, rel...)...)
}

func (s *Sysroot) bootDir() string { return s.path(BootDir) }

func (s *Sysroot) step(name string) error {
	if s.hooks.Step == nil {
		return nil
	}
	if err := s.hooks.Step(name); err != nil {
		return fmt.Errorf("at step %s: %w", name, err)
	}
	return nil
}

// lock takes the exclusive deploy lock and removes what an interrupted
// operation left behind (see recover).
func (s *Sysroot) lock(ctx context.Context) (*lockfile.Lock, error) {
	l, err := lockfile.Exclusive(ctx, s.path(LockFile))
	if err != nil {
		return nil, err
	}
	if err := s.recover(); err != nil {
		l.Unlock()
		return nil, fmt.Errorf("recover from an interrupted operation: %w", err)
	}
	return l, nil
}

// recover removes the staging state an interrupted operation may have
// left: loader/entries.new (either a partial new set or, after the swap,
// the old set), staging deployment and boot directories, and the scratch
// directory. None of it is ever referenced by loader/entries, so removing
// it never touches what boots. A staged record whose deployment is gone,
// or already has an entry (finalize was interrupted after its swap), is
// removed too. Called with the deploy lock held.
func (s *Sysroot) recover() error {
	if err := s.recoverStaged(); err != nil {
		return err
	}
	if err := removeAllDurable(s.path(BootDir, EntriesNew)); err != nil {
		return err
	}
	if err := removeAllDurable(s.path(TmpDir)); err != nil {
		return err
	}
	if err := os.MkdirAll(s.path(TmpDir), 0o755); err != nil {
		return err
	}
	for _, base := range []string{s.path(DeployDir), s.path(BootDir, BootFiles)} {
		srs, err := readDirNames(base)
		if err != nil {
			return err
		}
		for _, sr := range srs {
			dir := filepath.Join(base, sr)
			if base == s.path(DeployDir) {
				dir = filepath.Join(dir, "deploy")
			}
			names, err := readDirNames(dir)
			if err != nil {
				return err
			}
			for _, n := range names {
				if strings.HasPrefix(n, stagingPref) {
					if err := removeAllDurable(filepath.Join(dir, n)); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func (s *Sysroot) recoverStaged() error {
	_, staged, err := s.readStaged()
	if err != nil || staged == nil {
		return err
	}
	if _, err := os.Stat(s.deployDir(*staged)); err != nil {
		return s.removeStaged()
	}
	entries, err := s.loadEntries(context.Background())
	if err != nil {
		return err
	}
	for _, e := range cfsEntries(entries) {
		if *e.Dep == *staged {
			return s.removeStaged()
		}
	}
	return nil
}

// readDirNames lists a directory's names, sorted; a missing directory is
// empty.
func readDirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// removeAllDurable removes p (if it exists) and fsyncs its parent.
func removeAllDurable(p string) error {
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(p); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(p))
}

// mkdirTracked is mkdirDurable returning the directories it created,
// deepest last, for removeCreated to undo.
func mkdirTracked(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append([]string{d}, missing...)
	}
	return missing, mkdirDurable(dir)
}

// removeCreated removes directories mkdirTracked created, if empty.
func removeCreated(dirs []string) error {
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := atomicfile.SyncDir(filepath.Dir(dirs[i])); err != nil {
			return err
		}
	}
	return nil
}

// mkdirDurable creates dir and missing parents, fsyncing each parent of
// a directory it creates.
func mkdirDurable(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	if err := mkdirDurable(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}
