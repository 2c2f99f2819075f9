package repo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// ErrKeep is returned for a Keep below 1.
var ErrKeep = errors.New("prune: keep must be at least 1 (a ref's own commit is always kept)")

// CommitNode is what the mark phase needs to know about a stored commit.
type CommitNode struct {
	Parent *commit.ID
	// Objects are every object the commit needs: its dump, its image and
	// each content object its tree references.
	Objects []fsverity.Digest
}

// Marked is the result of the mark phase: what must be kept.
type Marked struct {
	Commits map[commit.ID]struct{}
	Objects map[fsverity.Digest]struct{}
}

// Reachable is the pure mark phase of prune. From every ref it follows the
// parent chain, keeping the ref's commit and its parents up to keep
// commits in all (keep ≥ 1), and marks those commits and every object they
// need. lookup returns a stored commit; an error matching ErrCommitMissing
// for a parent ends that chain (history already pruned), for a ref's own
// commit it is an error, as is any other lookup error: the mark fails
// closed, since what it cannot see it would sweep.
func Reachable(refs []Ref, keep int, lookup func(commit.ID) (*CommitNode, error)) (*Marked, error) {
	if keep < 1 {
		return nil, ErrKeep
	}
	m := &Marked{Commits: map[commit.ID]struct{}{}, Objects: map[fsverity.Digest]struct{}{}}
	// depth[id] is the fewest commits from a ref to id seen so far; a
	// commit reached again at a smaller depth is walked again, since
	// more of its ancestors may then be kept.
	depth := map[commit.ID]int{}
	nodes := map[commit.ID]*CommitNode{}
	for _, ref := range refs {
		id := ref.Commit
		for d := 1; d <= keep; d++ {
			if seen, ok := depth[id]; ok && seen <= d {
				break
			}
			depth[id] = d
			n, ok := nodes[id]
			if !ok {
				var err error
				n, err = lookup(id)
				if err != nil {
					if d > 1 && errors.Is(err, ErrCommitMissing) {
						break
					}
					if d == 1 {
						return nil, fmt.Errorf("ref %s: %w", ref.Name, err)
					}
					return nil, fmt.Errorf("ref %s, ancestor %s: %w", ref.Name, id, err)
				}
				nodes[id] = n
			}
			m.Commits[id] = struct{}{}
			for _, o := range n.Objects {
				m.Objects[o] = struct{}{}
			}
			if n.Parent == nil {
				break
			}
			id = *n.Parent
		}
	}
	return m, nil
}

// PruneOptions configures Prune.
type PruneOptions struct {
	// Keep is how many commits of each ref's history are kept, the ref's
	// own commit included: 1 keeps only what the refs point at. It must
	// be at least 1 (to drop a ref's commit, delete the ref).
	Keep int
	// DryRun reports what would be removed without removing anything.
	DryRun bool
	// Logger for progress records; nil discards.
	Logger *slog.Logger
}

// PruneReport is the result of Prune: what was (with DryRun, would be)
// removed, and what is kept.
type PruneReport struct {
	DryRun      bool `json:"dry-run"`
	Keep        int  `json:"keep"`
	KeptCommits int  `json:"kept-commits"`
	KeptObjects int  `json:"kept-objects"`
	// Commits removed with their signatures.
	Commits []commit.ID `json:"commits"`
	// Objects removed, and their total size.
	Objects     []fsverity.Digest `json:"objects"`
	ObjectBytes int64             `json:"object-bytes"`
	// Leftovers of interrupted writers removed.
	Leftovers []Leftover `json:"leftovers"`
	// BytesFreed is the total size of everything removed.
	BytesFreed int64 `json:"bytes-freed"`
}

// Prune removes the commits not among the newest opts.Keep of some ref's
// history, and every object no kept commit needs, and the leftovers of
// interrupted writers. It holds the GC lock exclusively from mark to
// sweep: it waits for running builds (which hold it shared) and new ones
// wait for it. Commits are removed before objects, so a crash in between
// leaves unreferenced objects, never a commit missing objects. Objects in
// quarantine/ are not touched.
func (r *Repo) Prune(ctx context.Context, opts PruneOptions) (*PruneReport, error) {
	if opts.Keep < 1 {
		return nil, ErrKeep
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := r.GCLock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	refs, err := r.Refs()
	if err != nil {
		return nil, fmt.Errorf("prune: %w (nothing pruned)", err)
	}
	marked, err := Reachable(refs, opts.Keep, func(id commit.ID) (*CommitNode, error) {
		return r.commitNode(ctx, id)
	})
	if err != nil {
		return nil, fmt.Errorf("prune: %w (nothing pruned; see cfs-commit fsck)", err)
	}
	rep := &PruneReport{DryRun: opts.DryRun, Keep: opts.Keep, KeptCommits: len(marked.Commits), KeptObjects: len(marked.Objects),
		Commits: []commit.ID{}, Objects: []fsverity.Digest{}, Leftovers: []Leftover{}}
	log.Debug("marked", "commits", len(marked.Commits), "objects", len(marked.Objects))

	// Sweep: commits, then objects, then leftovers.
	ids, err := r.Commits()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("prune: %w", err)
	}
	for _, id := range ids {
		if _, ok := marked.Commits[id]; ok {
			continue
		}
		for _, p := range []string{r.commitPath(id), r.signaturePath(id)} {
			if st, err := os.Lstat(p); err == nil {
				rep.BytesFreed += st.Size()
			}
		}
		rep.Commits = append(rep.Commits, id)
		if !opts.DryRun {
			if err := r.DeleteCommit(id); err != nil {
				return rep, fmt.Errorf("prune: delete commit %s: %w", id, err)
			}
		}
	}
	err = r.Objects.Walk(ctx, func(d fsverity.Digest) error {
		if _, ok := marked.Objects[d]; ok {
			return nil
		}
		st, err := os.Lstat(r.Objects.Path(d))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !opts.DryRun {
			if err := r.Objects.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		rep.Objects = append(rep.Objects, d)
		rep.ObjectBytes += st.Size()
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	if !opts.DryRun && len(rep.Objects) > 0 {
		// Remove unlinks without syncing; make the sweep durable.
		for _, dir := range fanoutDirs(rep.Objects) {
			_ = syncDirIfExists(filepath.Join(r.Objects.Dir(), dir))
		}
	}
	rep.BytesFreed += rep.ObjectBytes
	// No writer runs while we hold the GC lock exclusively: what is in
	// staging places now is left by interrupted ones.
	left, err := r.leftovers()
	if err != nil {
		return rep, fmt.Errorf("prune: %w", err)
	}
	for _, l := range left {
		if !opts.DryRun {
			if err := os.RemoveAll(filepath.Join(r.root, l.Path)); err != nil {
				return rep, fmt.Errorf("prune: remove leftover: %w", err)
			}
			l.Removed = true
		}
		rep.Leftovers = append(rep.Leftovers, l)
		rep.BytesFreed += l.Size
	}
	log.Debug("swept", "commits", len(rep.Commits), "objects", len(rep.Objects), "leftovers", len(rep.Leftovers), "bytes", rep.BytesFreed)
	return rep, nil
}

// commitNode reads what the mark needs of a stored commit: its parent and
// its objects, listed from the stored dump (whose digest LoadTree checks),
// or, when the dump is unusable, from the image object once its digest
// has been checked. If neither can be read the commit's objects are
// unknown and the mark fails.
func (r *Repo) commitNode(ctx context.Context, id commit.ID) (*CommitNode, error) {
	m, _, err := r.ReadCommit(id)
	if err != nil {
		return nil, err
	}
	n := &CommitNode{Parent: m.Parent, Objects: []fsverity.Digest{m.Dump.Digest, m.Image.Digest}}
	root, derr := r.LoadTree(ctx, m)
	if derr == nil {
		for _, p := range treeObjectPaths(root) {
			d, err := fsverity.ParseObjectPath(p)
			if err != nil {
				return nil, fmt.Errorf("commit %s: dump names %q, not an object: %w", id, p, err)
			}
			n.Objects = append(n.Objects, d)
		}
		return n, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	paths, ierr := r.imageObjects(ctx, m)
	if ierr != nil {
		return nil, fmt.Errorf("commit %s: cannot list its objects: dump: %w; image: %w", id, derr, ierr)
	}
	for _, p := range paths {
		d, err := fsverity.ParseObjectPath(p)
		if err != nil {
			return nil, fmt.Errorf("commit %s: image names %q, not an object: %w", id, p, err)
		}
		n.Objects = append(n.Objects, d)
	}
	return n, nil
}

// imageObjects lists the objects the commit's image object references,
// after checking the image against its digest.
func (r *Repo) imageObjects(ctx context.Context, m *commit.Metadata) ([]string, error) {
	if err := r.Objects.Verify(ctx, m.Image.Digest); err != nil {
		return nil, err
	}
	f, err := r.Objects.Open(m.Image.Digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return erofs.Objects(f, st.Size())
}

func fanoutDirs(ds []fsverity.Digest) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range ds {
		p := d.String()[:2]
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func syncDirIfExists(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// treeObjectPaths returns the object paths of the regular files with
// external content in a tree.
func treeObjectPaths(root *composefs.Node) []string {
	var out []string
	_ = root.Walk(func(_ string, n *composefs.Node) error {
		if n.HasExternalData() {
			out = append(out, n.Payload)
		}
		return nil
	})
	return out
}
