package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy/bls"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/deploy/etcmerge"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// SwitchOptions configures Switch and Upgrade.
type SwitchOptions struct {
	// Stateroot to deploy into; empty means the booted deployment's, else
	// the default deployment's, else the one init made first.
	Stateroot string
	// Kargs are added to the kernel arguments carried over from the
	// current default entry (--karg NAME[=VALUE]).
	Kargs []string
	// KargsDelete are removed from them (--karg-delete NAME[=VALUE]).
	KargsDelete []string
	// Stage does everything but the boot entries swap, which Finalize
	// does (at shutdown).
	Stage bool
	// VerifyAll re-verifies every object the commit references, also
	// those the merge deployment already uses.
	VerifyAll bool
}

// SwitchResult describes a switch, upgrade or finalize.
type SwitchResult struct {
	// Changed is false when upgrade found nothing newer (Message says so).
	Changed     bool   `json:"changed"`
	Message     string `json:"message,omitempty"`
	Stateroot   string `json:"stateroot"`
	Deployment  string `json:"deployment"`
	Commit      string `json:"commit"`
	ImageDigest string `json:"image-digest"`
	Version     string `json:"version"`
	Origin      string `json:"origin"`
	Staged      bool   `json:"staged"`
	// Entry is the new default entry's file name ("" when staged).
	Entry   string   `json:"entry,omitempty"`
	Options string   `json:"options"`
	KeyIDs  []string `json:"key-ids"`
	// Objects is how many objects the tree references; ObjectsVerified
	// how many were hashed (the rest are already used by the merge
	// deployment, see docs/deployments.md).
	Objects         int         `json:"objects"`
	ObjectsVerified int         `json:"objects-verified"`
	BootFilesReused bool        `json:"boot-files-reused"`
	Etc             *EtcSummary `json:"etc,omitempty"`
}

// EtcSummary is the /etc merge report.
type EtcSummary struct {
	Added     []string `json:"added"`
	Modified  []string `json:"modified"`
	Deleted   []string `json:"deleted"`
	Conflicts []string `json:"conflicts"`
	Skipped   []string `json:"skipped"`
}

func etcSummary(r *etcmerge.Report) *EtcSummary {
	nz := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return &EtcSummary{Added: nz(r.Added), Modified: nz(r.Modified), Deleted: nz(r.Deleted), Conflicts: nz(r.Conflicts), Skipped: nz(r.Skipped)}
}

// PreSwap describes a new default deployment to Hooks.PreSwap: what the
// next boot will load, for sealing secrets to it.
type PreSwap struct {
	Deployment  Deployment
	Dir         string // absolute deployment directory
	Commit      *commit.Metadata
	ImageDigest fsverity.Digest
	Kernel      string // absolute path of the kernel on the boot partition
	Initramfs   string // absolute path of the initramfs, "" if none
	Cmdline     string // the entry's kernel command line
}

// Switch deploys rev (a ref, a commit id or a unique prefix of one) from
// the sysroot's repository and makes it the default, keeping the previous
// default as rollback. Nothing that boots changes unless every check
// passes: see docs/deployments.md for the steps and why the boot entries
// swap is the one switching point. On any error before that swap,
// everything the switch created is removed again.
func (s *Sysroot) Switch(ctx context.Context, rev string, opts SwitchOptions) (*SwitchResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	return s.doSwitch(ctx, rev, opts)
}

// undoStack runs cleanup functions in reverse order on failure.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

func (u undoStack) run(err error) error {
	for i := len(u) - 1; i >= 0; i-- {
		if uerr := u[i](); uerr != nil {
			err = errors.Join(err, fmt.Errorf("rolling back: %w", uerr))
		}
	}
	return err
}

func (s *Sysroot) doSwitch(ctx context.Context, rev string, opts SwitchOptions) (_ *SwitchResult, retErr error) {
	trust, err := s.trustStore()
	if err != nil {
		return nil, err
	}
	id, err := s.repo.Resolve(rev)
	if err != nil {
		return nil, err
	}
	var origin Origin
	if repo.ValidRefName(rev) == nil {
		if rid, err := s.repo.ReadRef(rev); err == nil && rid == id {
			origin.Ref = rev
		}
	}
	m, canonical, err := s.repo.ReadCommit(id)
	if err != nil {
		if errors.Is(err, repo.ErrCorruptCommit) {
			return nil, verifyErr("commit "+id.String(), err)
		}
		return nil, err
	}
	envelope, err := s.repo.ReadSignature(id)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	vres, err := pull.VerifyCommit(canonical, envelope, trust)
	if err != nil {
		return nil, err
	}
	if origin.Ref == "" {
		origin.Ref = m.Ref
	}
	if m.Kernel == nil {
		return nil, fmt.Errorf("commit %s has no kernel under /usr/lib/modules: it cannot boot", id)
	}

	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	booted, err := s.booted()
	if err != nil {
		return nil, err
	}
	stateroot := s.pickStateroot(opts.Stateroot, booted, entries)
	if _, err := cmdline.ParseStateroot(stateroot); err != nil {
		return nil, err
	}
	if st, err := os.Stat(s.path(DeployDir, stateroot, "deploy")); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("stateroot %q is not initialised (cfs-deploy init --stateroot %s)", stateroot, stateroot)
	}
	base := s.mergeDeployment(stateroot, booted, entries)
	var baseArgs []string
	if cfs := cfsEntries(entries); len(cfs) > 0 {
		baseArgs = cmdline.Split(cfs[0].Entry.Cmdline())
	}
	kargs, err := computeKargs(baseArgs, opts.KargsDelete, opts.Kargs)
	if err != nil {
		return nil, err
	}

	gc, err := s.repo.GCLock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer gc.Unlock()

	// The new tree and the merge deployment's tree are parsed side by side.
	var (
		tree, baseTree *composefs.Node
		objs, baseObjs map[fsverity.Digest]int64
	)
	err = pull.ForEach(ctx, 2, 2, func(ctx context.Context, i int) error {
		var err error
		if i == 0 {
			if tree, err = pull.ReadTree(ctx, s.repo.Objects, m.Dump); err != nil {
				return err
			}
			objs, err = pull.TreeObjects(tree)
			return err
		}
		if base == nil {
			return nil
		}
		bm, _, _, err := s.readDeploymentCommit(*base)
		if err == nil {
			baseTree, err = pull.ReadTree(ctx, s.repo.Objects, bm.Dump)
		}
		if err == nil {
			baseObjs, err = pull.TreeObjects(baseTree)
		}
		if err != nil {
			return fmt.Errorf("merge deployment %s: %w", base, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	verified, err := s.checkObjects(ctx, objs, baseObjs, opts.VerifyAll)
	if err != nil {
		return nil, err
	}

	serial, err := s.nextSerial(stateroot, id)
	if err != nil {
		return nil, err
	}
	d := Deployment{Stateroot: stateroot, Commit: id, Serial: serial}
	res := &SwitchResult{
		Changed: true, Stateroot: stateroot, Deployment: d.Path(), Commit: id.String(),
		ImageDigest: m.Image.Digest.String(), Version: m.Version, Origin: origin.Ref, Staged: opts.Stage,
		Objects: len(objs), ObjectsVerified: verified,
	}
	for _, k := range vres.KeyIDs {
		res.KeyIDs = append(res.KeyIDs, k.String())
	}

	var undo undoStack
	committed := false
	defer func() {
		if retErr != nil && !committed {
			retErr = undo.run(retErr)
		}
	}()
	stage := s.path(DeployDir, stateroot, "deploy", stagingPref+d.Name())
	if err := os.Mkdir(stage, 0o755); err != nil {
		return nil, err
	}
	undo.push(func() error { return removeAllDurable(stage) })
	if err := s.step(StepVerified); err != nil {
		return nil, err
	}
	if err := writeImage(ctx, tree, filepath.Join(stage, ImageFile), m.Image.Digest); err != nil {
		return nil, err
	}
	if err := s.step(StepImageWritten); err != nil {
		return nil, err
	}
	rep, err := s.mergeEtc(ctx, tree, baseTree, base, filepath.Join(stage, EtcDir))
	if err != nil {
		return nil, err
	}
	res.Etc = etcSummary(rep)
	if err := s.step(StepEtcMerged); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{OriginFile, origin.marshal()}, {CommitFile, canonical}, {SignatureFile, envelope}} {
		if err := atomicfile.WriteFile(filepath.Join(stage, f.name), f.data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := syncFS(stage); err != nil {
		return nil, err
	}
	if err := s.step(StepDeploymentWritten); err != nil {
		return nil, err
	}
	final := s.deployDir(d)
	if err := renameNoReplace(stage, final); err != nil {
		return nil, err
	}
	undo.push(func() error { return removeAllDurable(final) })
	if err := atomicfile.SyncDir(filepath.Dir(final)); err != nil {
		return nil, err
	}
	if err := s.step(StepDeploymentPublished); err != nil {
		return nil, err
	}
	bf, created, err := s.installBootFiles(ctx, stateroot, m, tree)
	if err != nil {
		return nil, err
	}
	if created {
		undo.push(func() error {
			if err := removeAllDurable(bf.Dir); err != nil {
				return err
			}
			// Parents made for this install go too (only if empty).
			for _, d := range bf.MadeDirs {
				if err := os.Remove(d); err != nil {
					break
				}
				_ = atomicfile.SyncDir(filepath.Dir(d))
			}
			return nil
		})
	}
	res.BootFilesReused = bf.Reused
	if err := s.step(StepBootFilesWritten); err != nil {
		return nil, err
	}
	args := append(kargs, cmdline.ParamComposefs+"="+m.Image.Digest.String(), cmdline.ParamDeployment+"="+d.Path())
	options, err := cmdline.Join(args)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKarg, err)
	}
	res.Options = options
	entry := &bls.Entry{Title: entryTitle(d, m), SortKey: SortKey, Linux: bf.Linux, Options: []string{options}}
	if bf.Initrd != "" {
		entry.Initrd = []string{bf.Initrd}
	}

	if opts.Stage {
		rec := &StagedRecord{Deployment: d.Path(), Entry: StagedBoot{Title: entry.Title, Linux: entry.Linux, Initrd: entry.Initrd, Options: options}}
		if err := entry.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEntries, err)
		}
		created, err := mkdirTracked(filepath.Dir(s.stagedPath()))
		undo.push(func() error { return removeCreated(created) })
		if err != nil {
			return nil, err
		}
		if err := s.writeStaged(rec); err != nil {
			return nil, err
		}
		undo.push(s.removeStaged)
		if err := s.step(StepStaged); err != nil {
			return nil, err
		}
		committed = true
		return res, nil
	}
	file, swapped, err := s.installDefault(ctx, d, m, entry, bf, booted)
	if swapped {
		committed = true
		res.Entry = file
		if rmErr := s.removeStaged(); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// pickStateroot chooses the stateroot of a switch.
func (s *Sysroot) pickStateroot(want string, booted *Deployment, entries []*bootEntry) string {
	switch {
	case want != "":
		return want
	case booted != nil:
		return booted.Stateroot
	}
	if cfs := cfsEntries(entries); len(cfs) > 0 {
		return cfs[0].Dep.Stateroot
	}
	return s.cfg.Stateroot
}

// mergeDeployment returns the deployment whose /etc a new deployment of
// stateroot inherits and whose objects need no re-verification: the
// booted deployment if it is of that stateroot, else the first of that
// stateroot in boot order; nil if there is none.
func (s *Sysroot) mergeDeployment(stateroot string, booted *Deployment, entries []*bootEntry) *Deployment {
	exists := func(d Deployment) bool {
		st, err := os.Stat(s.deployDir(d))
		return err == nil && st.IsDir()
	}
	if booted != nil && booted.Stateroot == stateroot && exists(*booted) {
		return booted
	}
	for _, e := range cfsEntries(entries) {
		if e.Dep.Stateroot == stateroot && exists(*e.Dep) {
			return e.Dep
		}
	}
	return nil
}

// checkObjects checks the objects of the new tree that the merge
// deployment's tree does not reference (all of them with verifyAll):
// each must be present with the tree's size and is then hashed, on the
// sysroot's workers. The merge deployment's own objects were checked the
// same way when it was deployed (see docs/deployments.md, "Trust
// argument"). It returns how many objects it hashed.
func (s *Sysroot) checkObjects(ctx context.Context, objs, baseObjs map[fsverity.Digest]int64, verifyAll bool) (int, error) {
	var toVerify []fsverity.Digest
	for d := range objs {
		if _, ok := baseObjs[d]; !ok || verifyAll {
			toVerify = append(toVerify, d)
		}
	}
	slices.SortFunc(toVerify, func(a, b fsverity.Digest) int { return strings.Compare(string(a[:]), string(b[:])) })
	var (
		mu      sync.Mutex
		missing []string
	)
	// Presence and size first, so that a missing object is reported as
	// such (with the others missing) rather than as the first failure.
	err := pull.ForEach(ctx, s.workers, len(toVerify), func(ctx context.Context, i int) error {
		d := toVerify[i]
		st, err := os.Lstat(s.repo.Objects.Path(d))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			mu.Lock()
			missing = append(missing, d.String())
			mu.Unlock()
			return nil
		case err != nil:
			return err
		case !st.Mode().IsRegular():
			return verifyErr("object "+d.String(), errors.New("not a regular file"))
		case st.Size() != objs[d]:
			return verifyErr("object "+d.String(), fmt.Errorf("%d bytes, the tree says %d", st.Size(), objs[d]))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		more := ""
		if len(missing) > 5 {
			more = fmt.Sprintf(" and %d more", len(missing)-5)
			missing = missing[:5]
		}
		return 0, fmt.Errorf("%w: %s%s (pull the commit again)", ErrMissingObject, strings.Join(missing, ", "), more)
	}
	if err := pull.VerifyObjects(ctx, s.repo.Objects, toVerify, s.workers); err != nil {
		return 0, err
	}
	return len(toVerify), nil
}

// writeImage regenerates the composefs image of tree into p and checks its
// digest against the signed one. fs-verity is enabled on it where the
// file system has it.
func writeImage(ctx context.Context, tree *composefs.Node, p string, want fsverity.Digest) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	got, err := erofs.Write(bw, tree, erofs.DefaultWriteOptions())
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("regenerate image: %w", err)
	}
	if got != want {
		return pull.Mismatch("regenerated composefs image", want, got)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return err
	}
	return enableVerity(p, want)
}

// enableVerity enables fs-verity on a finished file where supported and
// checks the kernel's measurement (a file system without fs-verity is not
// an error here).
func enableVerity(p string, want fsverity.Digest) error {
	_, err := enableAndMeasure(p, want)
	if errors.Is(err, fsverity.ErrNotSupported) {
		return nil
	}
	return err
}

// mergeEtc builds the new deployment's /etc at out: the new tree's
// /usr/etc plus the local changes of the merge deployment (its live etc/
// against its own tree's /usr/etc).
func (s *Sysroot) mergeEtc(ctx context.Context, tree, baseTree *composefs.Node, base *Deployment, out string) (*etcmerge.Report, error) {
	scratch, err := os.MkdirTemp(s.path(TmpDir), "etc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	newDefaults := filepath.Join(scratch, "new-usr-etc")
	if err := checkoutSubtree(ctx, tree, "/usr/etc", s.repo.Objects, newDefaults); err != nil {
		return nil, err
	}
	oldDefaults := filepath.Join(scratch, "old-usr-etc")
	current := filepath.Join(scratch, "empty")
	if err := os.Mkdir(current, 0o755); err != nil {
		return nil, err
	}
	if baseTree != nil {
		if err := checkoutSubtree(ctx, baseTree, "/usr/etc", s.repo.Objects, oldDefaults); err != nil {
			return nil, err
		}
		if st, err := os.Lstat(filepath.Join(s.deployDir(*base), EtcDir)); err == nil && st.IsDir() {
			current = filepath.Join(s.deployDir(*base), EtcDir)
		}
	} else if err := os.Mkdir(oldDefaults, 0o755); err != nil {
		return nil, err
	}
	rep, err := etcmerge.Merge(ctx, oldDefaults, current, newDefaults, out, etcmerge.Options{Logger: s.log})
	if err != nil {
		return nil, fmt.Errorf("/etc merge: %w", err)
	}
	return rep, nil
}

// syncFS flushes the file system holding dir (syncfs(2)): the whole new
// deployment tree is durable before it is published.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

func entryTitle(d Deployment, m *commit.Metadata) string {
	if m.Version != "" {
		return fmt.Sprintf("%s %s (%s)", d.Stateroot, m.Version, d.Commit.Short())
	}
	return fmt.Sprintf("%s %s", d.Stateroot, d.Commit.Short())
}

// installDefault makes d (with entry) the default: the PreSwap hook, then
// a new entries set (d first; the previous first entry of d's stateroot,
// the booted and the pinned deployments and every other stateroot's and
// foreign entry kept) swapped in. swapped reports whether the swap
// happened (after which the operation cannot be rolled back).
func (s *Sysroot) installDefault(ctx context.Context, d Deployment, m *commit.Metadata, entry *bls.Entry, bf *bootFiles, booted *Deployment) (file string, swapped bool, err error) {
	if s.hooks.PreSwap != nil {
		p := &PreSwap{Deployment: d, Dir: s.deployDir(d), Commit: m, ImageDigest: m.Image.Digest,
			Kernel: bf.Vmlinuz, Initramfs: bf.Initramfs, Cmdline: entry.Cmdline()}
		if err := s.hooks.PreSwap(ctx, p); err != nil {
			return "", false, fmt.Errorf("pre-swap hook: %w", err)
		}
	}
	if err := s.step(StepPreSwap); err != nil {
		return "", false, err
	}
	cur, err := s.loadEntries(ctx)
	if err != nil {
		return "", false, err
	}
	serial := maxSerial(cur) + 1
	e := *entry
	e.Version = strconv.Itoa(serial)
	file = newEntryName(serial)
	planned := []plannedEntry{{File: file, Entry: &e}}
	var firstOfStateroot *bootEntry
	for _, c := range cfsEntries(cur) {
		if c.Dep.Stateroot == d.Stateroot {
			firstOfStateroot = c
			break
		}
	}
	for _, c := range cur {
		keep := c.Dep == nil || c.Dep.Stateroot != d.Stateroot || c == firstOfStateroot ||
			(booted != nil && *c.Dep == *booted) || s.isPinned(*c.Dep)
		if keep && (c.Dep == nil || *c.Dep != d) {
			planned = append(planned, planKept(c))
		}
	}
	mid := readMachineID(filepath.Join(s.deployDir(d), EtcDir))
	if mid == "" {
		mid = entryMachineID(cur)
	}
	swapped, err = s.swapEntries(ctx, planned, mid, file)
	return file, swapped, err
}
