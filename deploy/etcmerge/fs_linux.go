package etcmerge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/internal/atomicfile"
)

func sysStat(fi fs.FileInfo) *syscall.Stat_t {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		panic(fmt.Sprintf("etcmerge: no stat_t for %s", fi.Name()))
	}
	return st
}

// copyTree copies the node at src (a path whose ancestors are real
// directories) to rel in the stage, recursively, with its metadata. The
// metadata and times of directories are applied by finishDirs.
func (m *merger) copyTree(src, rel string) error {
	if err := m.checkCtx(); err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	st := sysStat(fi)
	dst := join(m.stage, rel)
	switch fi.Mode().Type() {
	case fs.ModeDir:
		if rel != "" {
			if err := os.Mkdir(dst, 0o700); err != nil {
				return fmt.Errorf("etcmerge: %w", err)
			}
		}
		m.dirSrc[rel] = src
		names, err := readNames(src)
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := m.copyTree(filepath.Join(src, name), child(rel, name)); err != nil {
				return err
			}
		}
		return nil
	case 0:
		if err := copyFile(src, dst); err != nil {
			return err
		}
	case fs.ModeSymlink:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("etcmerge: %w", err)
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("etcmerge: %w", err)
		}
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice, fs.ModeNamedPipe:
		if err := unix.Mknod(dst, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("etcmerge: mknod %s: %w", dst, err)
		}
	case fs.ModeSocket:
		m.rep.Skipped = append(m.rep.Skipped, show(rel))
		return nil
	default:
		return fmt.Errorf("etcmerge: %s: unsupported file type %v", src, fi.Mode().Type())
	}
	if err := applyMeta(dst, src, st, fi.Mode().Type() == fs.ModeSymlink); err != nil {
		return err
	}
	return setTimes(dst, st)
}

// copyFile copies a regular file's bytes: a reflink if the file system
// supports it, else copy_file_range (through os.File.ReadFrom).
func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("etcmerge: %s changed type while merging", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if _, err := out.ReadFrom(in); err != nil {
			out.Close()
			return fmt.Errorf("etcmerge: copy %s: %w", src, err)
		}
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	return nil
}

// applyMeta gives dst the owner, permission bits and exactly the xattrs
// of src. Order matters: chown clears setuid/setgid and
// security.capability, so the mode and the xattrs come after it.
func applyMeta(dst, src string, st *syscall.Stat_t, isLink bool) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("etcmerge: lchown %s: %w", dst, err)
	}
	if !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("etcmerge: chmod %s: %w", dst, err)
		}
	}
	want, err := listXattrs(src)
	if err != nil {
		return err
	}
	have, err := listXattrs(dst)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(have) {
		if _, ok := want[name]; ok {
			continue
		}
		// Inherited default ACLs or an LSM's label on creation.
		if err := unix.Lremovexattr(dst, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("etcmerge: remove xattr %s of %s: %w", name, dst, err)
		}
	}
	for _, name := range sortedKeys(want) {
		if v, ok := have[name]; ok && bytes.Equal(v, want[name]) {
			continue
		}
		if err := unix.Lsetxattr(dst, name, want[name], 0); err != nil {
			return fmt.Errorf("etcmerge: set xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func setTimes(dst string, st *syscall.Stat_t) error {
	ts := []unix.Timespec{
		{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec},
		{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("etcmerge: set times of %s: %w", dst, err)
	}
	return nil
}

// finishDirs applies the recorded metadata and times to every directory
// of the stage, deepest first (so that a read-only or unsearchable parent
// never gets in the way, and no later change touches a finished mtime).
func (m *merger) finishDirs() error {
	rels := make([]string, 0, len(m.dirSrc))
	for rel := range m.dirSrc {
		rels = append(rels, rel)
	}
	depth := func(rel string) int {
		if rel == "" {
			return -1
		}
		return strings.Count(rel, "/")
	}
	slices.SortFunc(rels, func(a, b string) int {
		if d := depth(b) - depth(a); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, rel := range rels {
		if err := m.checkCtx(); err != nil {
			return err
		}
		src := m.dirSrc[rel]
		fi, err := os.Lstat(src)
		if err != nil {
			return fmt.Errorf("etcmerge: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("etcmerge: %s changed type while merging", src)
		}
		st := sysStat(fi)
		dst := join(m.stage, rel)
		if err := applyMeta(dst, src, st, false); err != nil {
			return err
		}
		if err := setTimes(dst, st); err != nil {
			return err
		}
	}
	return nil
}

// publish makes the stage durable and renames it to out without ever
// replacing an existing out.
func publish(stage, out string) error {
	d, err := os.Open(stage)
	if err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	err = unix.Syncfs(int(d.Fd()))
	d.Close()
	if err != nil {
		return fmt.Errorf("etcmerge: syncfs: %w", err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, out, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// File system without RENAME_NOREPLACE: check, then rename (the
		// window is the caller's, who owns the deployment directory).
		if _, lerr := os.Lstat(out); lerr == nil {
			err = unix.EEXIST
		} else {
			err = os.Rename(stage, out)
		}
	}
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("%w: %s", ErrOutputExists, out)
	}
	if err != nil {
		return fmt.Errorf("etcmerge: rename %s to %s: %w", stage, out, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(out)); err != nil {
		return fmt.Errorf("etcmerge: %w", err)
	}
	return nil
}

// removeAll removes a stage even if finishDirs already made some of its
// directories read-only for a non-root caller.
func removeAll(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// listXattrs returns all extended attributes of p (not following a
// symlink); nil if the file system has none.
func listXattrs(p string) (map[string][]byte, error) {
	var buf []byte
	for size := 256; ; size *= 2 {
		buf = make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("etcmerge: list xattrs of %s: %w", p, err)
		}
		buf = buf[:n]
		break
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf), "\x00") {
		if name == "" {
			continue
		}
		v, err := getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("etcmerge: get xattr %s of %s: %w", name, p, err)
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (m *merger) ignored(name string) bool {
	for _, p := range m.ignore {
		if p == name || (strings.HasSuffix(p, ".") && strings.HasPrefix(name, p)) {
			return true
		}
	}
	return false
}

// metaEqual compares what counts as a node's own metadata: permission
// bits, owner, group and the xattrs not ignored.
func (m *merger) metaEqual(pa string, ia fs.FileInfo, pb string, ib fs.FileInfo) (bool, error) {
	sa, sb := sysStat(ia), sysStat(ib)
	if sa.Mode&0o7777 != sb.Mode&0o7777 || sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		return false, nil
	}
	xa, err := listXattrs(pa)
	if err != nil {
		return false, err
	}
	xb, err := listXattrs(pb)
	if err != nil {
		return false, err
	}
	for _, x := range []map[string][]byte{xa, xb} {
		for k := range x {
			if m.ignored(k) {
				delete(x, k)
			}
		}
	}
	if len(xa) != len(xb) {
		return false, nil
	}
	for k, v := range xa {
		if w, ok := xb[k]; !ok || !bytes.Equal(v, w) {
			return false, nil
		}
	}
	return true, nil
}

// treeEqual reports whether two nodes (nil = absent) are the same: type,
// metadata and content, recursively for directories. Times are ignored.
func (m *merger) treeEqual(pa string, ia fs.FileInfo, pb string, ib fs.FileInfo) (bool, error) {
	if ia == nil || ib == nil {
		return ia == nil && ib == nil, nil
	}
	if err := m.checkCtx(); err != nil {
		return false, err
	}
	if ia.Mode().Type() != ib.Mode().Type() {
		return false, nil
	}
	if same, err := m.metaEqual(pa, ia, pb, ib); err != nil || !same {
		return false, err
	}
	switch ia.Mode().Type() {
	case fs.ModeDir:
		na, err := readNames(pa)
		if err != nil {
			return false, err
		}
		nb, err := readNames(pb)
		if err != nil {
			return false, err
		}
		if !slices.Equal(na, nb) {
			return false, nil
		}
		for _, name := range na {
			ca, cb := filepath.Join(pa, name), filepath.Join(pb, name)
			fa, err := os.Lstat(ca)
			if err != nil {
				return false, fmt.Errorf("etcmerge: %w", err)
			}
			fb, err := os.Lstat(cb)
			if err != nil {
				return false, fmt.Errorf("etcmerge: %w", err)
			}
			if same, err := m.treeEqual(ca, fa, cb, fb); err != nil || !same {
				return false, err
			}
		}
		return true, nil
	case 0:
		if ia.Size() != ib.Size() {
			return false, nil
		}
		return contentEqual(pa, pb)
	case fs.ModeSymlink:
		ta, err := os.Readlink(pa)
		if err != nil {
			return false, fmt.Errorf("etcmerge: %w", err)
		}
		tb, err := os.Readlink(pb)
		if err != nil {
			return false, fmt.Errorf("etcmerge: %w", err)
		}
		return ta == tb, nil
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return sysStat(ia).Rdev == sysStat(ib).Rdev, nil
	}
	return true, nil // FIFOs and sockets: metadata is all there is
}

func contentEqual(pa, pb string) (bool, error) {
	fa, err := os.OpenFile(pa, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false, fmt.Errorf("etcmerge: %w", err)
	}
	defer fa.Close()
	fb, err := os.OpenFile(pb, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false, fmt.Errorf("etcmerge: %w", err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		doneA := errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF)
		doneB := errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF)
		if ea != nil && !doneA {
			return false, fmt.Errorf("etcmerge: read %s: %w", pa, ea)
		}
		if eb != nil && !doneB {
			return false, fmt.Errorf("etcmerge: read %s: %w", pb, eb)
		}
		if doneA || doneB {
			return doneA == doneB, nil
		}
	}
}
