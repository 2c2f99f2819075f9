// Package etcmerge builds the /etc of a new deployment by three-way merge,
// the way ostree does on every upgrade: the new deployment gets the
// defaults its commit ships (newDefaults, its /usr/etc) plus the local
// changes the administrator made on the booted deployment (the difference
// between the booted deployment's shipped defaults, oldDefaults, and its
// live /etc, current).
//
// # What counts as a local change
//
// A path is changed locally when it was added, deleted or modified in
// current relative to oldDefaults. A file, symlink or special file is
// modified when its type, permission bits (setuid/setgid/sticky included),
// owner, group, extended attributes (every namespace: user.*, trusted.*,
// security.* including security.selinux, system.posix_acl_*) or content
// (symlink target, device number) differ. A directory is modified when its
// own permissions, owner or xattrs differ; its entries are compared one by
// one. Timestamps never count: touching a file is not a change. Unlike
// ostree, which ignores xattrs altogether because /etc is relabeled on
// SELinux systems, xattrs count by default; Options.IgnoreXattrs restores
// ostree's behaviour for the names it lists.
//
// # The merge
//
// The result starts as a copy of newDefaults. Then every local change is
// applied on top, and wins:
//
//   - added or modified locally: the current version replaces whatever
//     newDefaults has at that path (a directory is copied with everything in
//     it; a type change — file to directory or back — replaces the whole
//     subtree). If newDefaults also changed the path relative to
//     oldDefaults (or added it, or removed it) and did not end up identical
//     to the local version, the path is reported as a conflict. So a file
//     deleted upstream but modified locally is kept, and is a conflict.
//   - deleted locally: the path is removed from the result. If newDefaults
//     changed it, it stays deleted and is reported as a conflict; if
//     newDefaults removed it too, that is no conflict.
//   - a directory whose metadata changed locally gets the local metadata;
//     if newDefaults changed the same directory's metadata too, conflict.
//     If newDefaults removed the directory or replaced it with a file, the
//     directory is recreated with the local metadata (conflict); its
//     unchanged entries follow newDefaults (they are gone), its changed
//     entries are applied as usual.
//   - a change below a directory that newDefaults removed or replaced
//     recreates the missing directories from current's metadata (like
//     ostree's ensure_directory_from_template); a file or symlink of
//     newDefaults in the way is removed and reported as a conflict. Symlinks
//     of newDefaults are never followed: nothing is ever written outside
//     the output tree.
//
// Everything written keeps its source's type, permission bits, owner and
// group (lchown), xattrs (all of them, and only them) and atime/mtime;
// regular files are copied with a reflink when the file system can, else
// with copy_file_range. Hard links are not preserved (ostree does not
// either); sockets are skipped and listed in Report.Skipped.
//
// The result is assembled in a staging directory next to out, synced
// (syncfs) and renamed to out with RENAME_NOREPLACE, then out's parent
// directory is fsynced: out appears complete or not at all, and on error
// or cancellation the staging directory is removed. Merge needs root in
// general (lchown, trusted.* xattrs, device nodes); trees that only use the
// caller's own uid/gid and user.* xattrs merge without it.
package etcmerge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Options tunes Merge. The zero value is ready to use.
type Options struct {
	// IgnoreXattrs lists extended attribute names whose differences do
	// not make a path "changed" (an entry ending in "." is a prefix, e.g.
	// "security."). They are still copied with the version that wins.
	// Callers on SELinux systems whose /etc gets relabeled use
	// {"security.selinux"}; {"user.", "trusted.", "security.", "system."}
	// ignores every xattr, as ostree does.
	IgnoreXattrs []string
	// Logger receives one debug record per applied change; nil discards.
	Logger *slog.Logger
}

// Report lists what Merge did, as slash-separated paths relative to the
// /etc root ("." for the root itself), each list sorted. A directory path
// stands for its whole subtree.
type Report struct {
	Added     []string // local additions carried into the result
	Modified  []string // local modifications (content, metadata, type) carried over
	Deleted   []string // local deletions carried over
	Conflicts []string // paths where the local change won over a different upstream change
	Skipped   []string // sockets, which cannot be copied (a local one is also listed as Added)
}

// ErrOutputExists means out already exists; Merge never replaces it.
var ErrOutputExists = errors.New("etcmerge: output already exists")

// ErrNotDirectory means one of the three input trees is not a directory.
var ErrNotDirectory = errors.New("etcmerge: not a directory")

// Merge merges as described in the package documentation and creates out,
// which must not exist (its parent must). oldDefaults is the booted
// deployment's /usr/etc, current its live /etc, newDefaults the new
// commit's /usr/etc. On error nothing is left behind.
func Merge(ctx context.Context, oldDefaults, current, newDefaults, out string, opts Options) (_ *Report, retErr error) {
	for _, root := range []string{oldDefaults, current, newDefaults} {
		fi, err := os.Lstat(root)
		if err != nil {
			return nil, fmt.Errorf("etcmerge: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s", ErrNotDirectory, root)
		}
	}
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrOutputExists, out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("etcmerge: %w", err)
	}
	parent := filepath.Dir(out)
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".etcmerge-")
	if err != nil {
		return nil, fmt.Errorf("etcmerge: create staging directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := removeAll(stage); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("etcmerge: remove staging directory: %w", err))
			}
		}
	}()

	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &merger{
		ctx: ctx, old: oldDefaults, cur: current, new: newDefaults, stage: stage,
		ignore: opts.IgnoreXattrs, log: log, dirSrc: map[string]string{},
	}
	if err := m.copyTree(newDefaults, ""); err != nil {
		return nil, err
	}
	if err := m.walk(""); err != nil {
		return nil, err
	}
	if err := m.finishDirs(); err != nil {
		return nil, err
	}
	if err := publish(stage, out); err != nil {
		return nil, err
	}
	r := &m.rep
	for _, l := range []*[]string{&r.Added, &r.Modified, &r.Deleted, &r.Conflicts, &r.Skipped} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return r, nil
}

type merger struct {
	ctx           context.Context
	old, cur, new string // input roots
	stage         string // output root, being built
	ignore        []string
	log           *slog.Logger
	rep           Report
	dirSrc        map[string]string // stage dir (rel) → directory whose metadata and times it gets
}

// rel paths are slash-separated, relative, "" for the root.
func join(root, rel string) string {
	if rel == "" {
		return root
	}
	return filepath.Join(root, filepath.FromSlash(rel))
}

func child(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func show(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func (m *merger) checkCtx() error {
	if err := m.ctx.Err(); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	return nil
}

// walk compares oldDefaults and current at rel, where both are directories
// whose ancestors are real directories in both trees.
func (m *merger) walk(rel string) error {
	if err := m.checkCtx(); err != nil {
		return err
	}
	op, cp := join(m.old, rel), join(m.cur, rel)
	oi, err := lstatOpt(op)
	if err != nil {
		return err
	}
	ci, err := lstatOpt(cp)
	if err != nil {
		return err
	}
	if oi != nil && ci != nil && oi.IsDir() && ci.IsDir() {
		same, err := m.metaEqual(op, oi, cp, ci)
		if err != nil {
			return err
		}
		if !same {
			if err := m.dirMetaChanged(rel, oi, ci); err != nil {
				return err
			}
		}
		names, err := unionNames(op, cp)
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := m.walk(child(rel, name)); err != nil {
				return err
			}
		}
		return nil
	}
	if oi != nil && ci != nil {
		same, err := m.treeEqual(op, oi, cp, ci)
		if err != nil {
			return err
		}
		if same {
			return nil
		}
	}
	return m.changed(rel, oi, ci)
}

// changed applies a local addition, modification, type change or deletion
// at rel.
func (m *merger) changed(rel string, oi, ci fs.FileInfo) error {
	np, ni, err := m.lookupNew(rel)
	if err != nil {
		return err
	}
	upstreamChanged, err := m.treeEqual(join(m.old, rel), oi, np, ni)
	if err != nil {
		return err
	}
	upstreamChanged = !upstreamChanged
	if ci == nil {
		m.log.Debug("etc merge: deleted locally", "path", rel, "upstream_changed", upstreamChanged && ni != nil)
		m.rep.Deleted = append(m.rep.Deleted, show(rel))
		if upstreamChanged && ni != nil {
			m.rep.Conflicts = append(m.rep.Conflicts, show(rel))
		}
		return m.removeStage(rel)
	}
	cp := join(m.cur, rel)
	convergent, err := m.treeEqual(cp, ci, np, ni)
	if err != nil {
		return err
	}
	if oi == nil {
		m.rep.Added = append(m.rep.Added, show(rel))
	} else {
		m.rep.Modified = append(m.rep.Modified, show(rel))
	}
	if upstreamChanged && !convergent {
		m.rep.Conflicts = append(m.rep.Conflicts, show(rel))
	}
	m.log.Debug("etc merge: local change wins", "path", rel, "added", oi == nil, "conflict", upstreamChanged && !convergent)
	if err := m.ensureParents(rel); err != nil {
		return err
	}
	if err := m.removeStage(rel); err != nil {
		return err
	}
	return m.copyTree(cp, rel)
}

// dirMetaChanged handles a directory present in oldDefaults and current
// whose own metadata differs.
func (m *merger) dirMetaChanged(rel string, oi, ci fs.FileInfo) error {
	m.rep.Modified = append(m.rep.Modified, show(rel))
	cp := join(m.cur, rel)
	np, ni, err := m.lookupNew(rel)
	if err != nil {
		return err
	}
	if ni != nil && ni.IsDir() {
		upSame, err := m.metaEqual(join(m.old, rel), oi, np, ni)
		if err != nil {
			return err
		}
		convergent, err := m.metaEqual(cp, ci, np, ni)
		if err != nil {
			return err
		}
		if !upSame && !convergent {
			m.rep.Conflicts = append(m.rep.Conflicts, show(rel))
		}
		m.dirSrc[rel] = cp
		return nil
	}
	// Upstream removed the directory or replaced it: recreate it.
	m.rep.Conflicts = append(m.rep.Conflicts, show(rel))
	if err := m.ensureParents(rel); err != nil {
		return err
	}
	if err := m.removeStage(rel); err != nil {
		return err
	}
	if err := os.Mkdir(join(m.stage, rel), 0o700); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	m.dirSrc[rel] = cp
	return nil
}

// lookupNew returns newDefaults' node at rel, or nil if there is none —
// also when an ancestor of rel is not a real directory there (a symlink
// is never followed).
func (m *merger) lookupNew(rel string) (string, fs.FileInfo, error) {
	fi, err := lstatBeneath(m.new, rel)
	return join(m.new, rel), fi, err
}

// lstatBeneath lstats root/rel after checking that every ancestor of rel
// below root is a real directory; it returns nil, nil if something is
// missing or in the way.
func lstatBeneath(root, rel string) (fs.FileInfo, error) {
	if rel == "" {
		return lstatOpt(root)
	}
	parts := strings.Split(rel, "/")
	p := root
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := lstatOpt(p)
		if err != nil || fi == nil || !fi.IsDir() {
			return nil, err
		}
	}
	return lstatOpt(filepath.Join(p, parts[len(parts)-1]))
}

// ensureParents makes every ancestor of rel in the stage a real
// directory, creating missing ones (and replacing non-directories, a
// conflict) with current's metadata as the template.
func (m *merger) ensureParents(rel string) error {
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		q := strings.Join(parts[:i], "/")
		sp := join(m.stage, q)
		fi, err := lstatOpt(sp)
		if err != nil {
			return err
		}
		if fi != nil && fi.IsDir() {
			continue
		}
		if fi != nil {
			m.rep.Conflicts = append(m.rep.Conflicts, q)
			if err := os.Remove(sp); err != nil {
				return fmt.Errorf("etcmerge: %w", err)
			}
		}
		if err := os.Mkdir(sp, 0o700); err != nil {
			return fmt.Errorf("etcmerge: %w", err)
		}
		m.dirSrc[q] = join(m.cur, q)
	}
	return nil
}

// removeStage removes rel (and its subtree) from the stage, if it is
// there below real directories.
func (m *merger) removeStage(rel string) error {
	fi, err := lstatBeneath(m.stage, rel)
	if err != nil || fi == nil {
		return err
	}
	if err := os.RemoveAll(join(m.stage, rel)); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	for k := range m.dirSrc {
		if k == rel || strings.HasPrefix(k, rel+"/") {
			delete(m.dirSrc, k)
		}
	}
	return nil
}

func lstatOpt(p string) (fs.FileInfo, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("etcmerge: %w", err)
	}
	return fi, nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("etcmerge: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("etcmerge: read directory %s: %w", dir, err)
	}
	slices.Sort(names)
	return names, nil
}

func unionNames(a, b string) ([]string, error) {
	na, err := readNames(a)
	if err != nil {
		return nil, err
	}
	nb, err := readNames(b)
	if err != nil {
		return nil, err
	}
	all := append(na, nb...)
	slices.Sort(all)
	return slices.Compact(all), nil
}
