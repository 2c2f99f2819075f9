package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// CleanupOptions configures Cleanup.
type CleanupOptions struct {
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
}

// CleanupResult lists what Cleanup removed (or would remove).
type CleanupResult struct {
	DryRun      bool     `json:"dry-run"`
	Entries     []string `json:"removed-entries"`
	Deployments []string `json:"removed-deployments"`
	BootFiles   []string `json:"removed-boot-files"`
	Commits     []string `json:"removed-commits"`
	Objects     int      `json:"removed-objects"`
	ObjectBytes int64    `json:"removed-object-bytes"`
}

// Cleanup removes every deployment that is not the default, the rollback
// (the second in boot order), booted, staged or pinned — first their boot
// entries (one atomic swap), then their directories — then the boot files
// no remaining entry or staged deployment uses, then, holding the
// repository's GC lock exclusively, the commits and objects that neither a
// kept deployment nor a ref needs. The mark reads every kept commit's dump
// (digest-checked); if one cannot be read, nothing is swept.
func (s *Sysroot) Cleanup(ctx context.Context, opts CleanupOptions) (*CleanupResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	res := &CleanupResult{DryRun: opts.DryRun, Entries: []string{}, Deployments: []string{}, BootFiles: []string{}, Commits: []string{}}

	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	booted, err := s.booted()
	if err != nil {
		return nil, err
	}
	rec, staged, err := s.readStaged()
	if err != nil {
		return nil, err
	}
	all, err := s.listDeployments()
	if err != nil {
		return nil, err
	}
	keep := map[Deployment]bool{}
	cfs := cfsEntries(entries)
	for i, e := range cfs {
		if i < 2 {
			keep[*e.Dep] = true
		}
	}
	if booted != nil {
		keep[*booted] = true
	}
	if staged != nil {
		keep[*staged] = true
	}
	for _, d := range all {
		if s.isPinned(d) {
			keep[d] = true
		}
	}

	// 1. Entries of deployments that go.
	var planned []plannedEntry
	remaining := entries[:0:0]
	for _, e := range entries {
		if e.Dep != nil && !keep[*e.Dep] {
			res.Entries = append(res.Entries, e.File)
			continue
		}
		planned = append(planned, planKept(e))
		remaining = append(remaining, e)
	}
	if len(res.Entries) > 0 && !opts.DryRun {
		if _, err := s.swapEntries(ctx, planned, entryMachineID(entries), cfs[0].File); err != nil {
			return nil, err
		}
	}

	// 2. Deployment directories.
	var kept []Deployment
	for _, d := range all {
		if keep[d] {
			kept = append(kept, d)
			continue
		}
		res.Deployments = append(res.Deployments, d.Path())
		if !opts.DryRun {
			if err := removeAllDurable(s.deployDir(d)); err != nil {
				return nil, err
			}
		}
	}

	// 3. Boot files.
	used := map[string]bool{}
	addUsed := func(p string) {
		if p != "" {
			used[filepath.Dir(s.BootPath(p))] = true
		}
	}
	for _, e := range remaining {
		if e.Entry != nil {
			addUsed(e.Entry.Linux)
			for _, p := range e.Entry.Initrd {
				addUsed(p)
			}
		}
	}
	if rec != nil {
		addUsed(rec.Entry.Linux)
		for _, p := range rec.Entry.Initrd {
			addUsed(p)
		}
	}
	srs, err := readDirNames(s.path(BootDir, BootFiles))
	if err != nil {
		return nil, err
	}
	for _, sr := range srs {
		names, err := readDirNames(s.path(BootDir, BootFiles, sr))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			dir := s.path(BootDir, BootFiles, sr, n)
			if used[dir] || strings.HasPrefix(n, stagingPref) {
				continue
			}
			res.BootFiles = append(res.BootFiles, dir)
			if !opts.DryRun {
				if err := removeAllDurable(dir); err != nil {
					return nil, err
				}
			}
		}
	}

	// 4. Repository: mark, then sweep.
	gc, err := s.repo.GCLock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer gc.Unlock()
	var roots []*commit.Metadata
	keepCommits := map[commit.ID]bool{}
	for _, d := range kept {
		m, _, _, err := s.readDeploymentCommit(d)
		if err != nil {
			return nil, fmt.Errorf("kept deployment %s: %w (nothing pruned)", d, err)
		}
		roots = append(roots, m)
		keepCommits[d.Commit] = true
	}
	refs, err := s.repo.Refs()
	if err != nil {
		return nil, err
	}
	for _, r := range refs {
		m, _, err := s.repo.ReadCommit(r.Commit)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w (nothing pruned)", r.Name, err)
		}
		roots = append(roots, m)
		keepCommits[r.Commit] = true
	}
	marked, err := Reachable(ctx, s, roots)
	if err != nil {
		return nil, fmt.Errorf("%w (nothing pruned)", err)
	}
	ids, err := s.repo.Commits()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, id := range ids {
		if keepCommits[id] {
			continue
		}
		res.Commits = append(res.Commits, id.String())
		if !opts.DryRun {
			if err := s.repo.DeleteCommit(id); err != nil {
				return nil, err
			}
		}
	}
	var sweep []fsverity.Digest
	err = s.repo.Objects.Walk(ctx, func(d fsverity.Digest) error {
		if _, ok := marked[d]; !ok {
			sweep = append(sweep, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, d := range sweep {
		if st, err := os.Lstat(s.repo.Objects.Path(d)); err == nil {
			res.ObjectBytes += st.Size()
		}
		res.Objects++
		if !opts.DryRun {
			if err := s.repo.Objects.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	slices.Sort(res.BootFiles)
	return res, nil
}

// Reachable is the mark of cleanup: every object the given commits need —
// their dump, their image and every content object of their trees. The
// dumps are read from the sysroot's repository with their digests checked;
// any failure is an error, so that nothing is swept on a partial mark.
func Reachable(ctx context.Context, s *Sysroot, roots []*commit.Metadata) (map[fsverity.Digest]struct{}, error) {
	marked := map[fsverity.Digest]struct{}{}
	seen := map[fsverity.Digest]bool{}
	for _, m := range roots {
		marked[m.Dump.Digest] = struct{}{}
		marked[m.Image.Digest] = struct{}{}
		if seen[m.Dump.Digest] {
			continue
		}
		seen[m.Dump.Digest] = true
		tree, err := pull.ReadTree(ctx, s.repo.Objects, m.Dump)
		if err != nil {
			return nil, err
		}
		objs, err := pull.TreeObjects(tree)
		if err != nil {
			return nil, err
		}
		for d := range objs {
			marked[d] = struct{}{}
		}
	}
	return marked, nil
}
