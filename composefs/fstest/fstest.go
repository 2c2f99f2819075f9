//go:build linux

package fstest

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
	"testing"

	"golang.org/x/sys/unix"
)

// Options tunes CompareTrees.
type Options struct {
	// IgnoreXattrPrefixes lists xattr name prefixes left out of the
	// comparison, e.g. "security.selinux" where the mount relabels, or
	// "trusted.overlay." to compare with a raw (non-overlay) EROFS
	// mount. By default every xattr is compared, trusted.overlay.*
	// included: through the overlay, a user's own trusted.overlay.*
	// xattrs (stored escaped in the image) must read back as they were.
	IgnoreXattrPrefixes []string
	// SkipDirTimes leaves directory mtimes out.
	SkipDirTimes bool
}

// A Difference is one way the two trees differ at a path.
type Difference struct {
	// Path is relative to the tree roots, slash-separated; "." is the
	// root itself.
	Path string
	// What differs: "missing" (only in the first tree), "extra" (only
	// in the second), "type", "mode", "owner", "size", "mtime", "rdev",
	// "symlink", "content", "xattr NAME", or "error" (a path that could
	// not be examined).
	What string
	// Want and Got describe the first and the second tree's side.
	Want, Got string
}

func (d Difference) String() string {
	return fmt.Sprintf("%s: %s: want %s, got %s", d.Path, d.What, d.Want, d.Got)
}

// CompareTrees compares the tree at want with the tree at got and returns
// every difference (none when they are the same), in walk order of want,
// then paths only in got. Sizes are compared for regular files (content
// only when they are equal; a symlink's size is its target's length).
// Link counts, directory sizes, inode numbers and
// atime/ctime are not compared: they depend on the filesystem, and a
// composefs image does not keep a directory's hardlinks. The error is for
// a want tree that cannot be walked; problems on the got side are
// differences.
func CompareTrees(want, got string, opts Options) ([]Difference, error) {
	var diffs []Difference
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := relPath(want, p)
		ds, skip := compareEntry(rel, p, filepath.Join(got, filepath.FromSlash(rel)), opts)
		diffs = append(diffs, ds...)
		if skip && d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return diffs, fmt.Errorf("fstest: walk %s: %w", want, err)
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		rel := relPath(got, p)
		if err != nil {
			diffs = append(diffs, Difference{Path: rel, What: "error", Want: "readable", Got: err.Error()})
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if _, lerr := os.Lstat(filepath.Join(want, filepath.FromSlash(rel))); errors.Is(lerr, fs.ErrNotExist) {
			diffs = append(diffs, Difference{Path: rel, What: "extra", Want: "absent", Got: typeName(d.Type())})
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return diffs, fmt.Errorf("fstest: walk %s: %w", got, err)
	}
	return diffs, nil
}

// AssertSameTree fails t with one error per difference between the trees.
func AssertSameTree(t testing.TB, want, got string, opts Options) {
	t.Helper()
	diffs, err := CompareTrees(want, got, opts)
	for _, d := range diffs {
		t.Error(d)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func relPath(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

// compareEntry compares one path; skip says the got side is missing or of
// another type, so a directory's children need not be compared one by one.
func compareEntry(rel, a, b string, opts Options) (diffs []Difference, skip bool) {
	add := func(what, want, got string) { diffs = append(diffs, Difference{rel, what, want, got}) }
	var sa, sb unix.Stat_t
	if err := unix.Lstat(a, &sa); err != nil {
		add("error", "readable", err.Error())
		return diffs, true
	}
	if err := unix.Lstat(b, &sb); err != nil {
		if errors.Is(err, unix.ENOENT) {
			add("missing", modeType(sa.Mode), "absent")
		} else {
			add("error", modeType(sa.Mode), err.Error())
		}
		return diffs, true
	}
	if sa.Mode&unix.S_IFMT != sb.Mode&unix.S_IFMT {
		add("type", modeType(sa.Mode), modeType(sb.Mode))
		return diffs, true
	}
	if sa.Mode != sb.Mode {
		add("mode", fmt.Sprintf("%#o", sa.Mode&07777), fmt.Sprintf("%#o", sb.Mode&07777))
	}
	if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		add("owner", fmt.Sprintf("%d:%d", sa.Uid, sa.Gid), fmt.Sprintf("%d:%d", sb.Uid, sb.Gid))
	}
	isDir := sa.Mode&unix.S_IFMT == unix.S_IFDIR
	if !(isDir && opts.SkipDirTimes) && sa.Mtim != sb.Mtim {
		add("mtime", fmt.Sprintf("%d.%09d", sa.Mtim.Sec, sa.Mtim.Nsec), fmt.Sprintf("%d.%09d", sb.Mtim.Sec, sb.Mtim.Nsec))
	}
	switch sa.Mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		if sa.Rdev != sb.Rdev {
			add("rdev", devString(sa.Rdev), devString(sb.Rdev))
		}
	case unix.S_IFLNK:
		ta, erra := os.Readlink(a)
		tb, errb := os.Readlink(b)
		switch {
		case erra != nil || errb != nil:
			add("symlink", fmt.Sprintf("%q (%v)", ta, erra), fmt.Sprintf("%q (%v)", tb, errb))
		case ta != tb:
			add("symlink", fmt.Sprintf("%q", ta), fmt.Sprintf("%q", tb))
		}
	case unix.S_IFREG:
		if sa.Size != sb.Size {
			add("size", fmt.Sprint(sa.Size), fmt.Sprint(sb.Size))
		} else if want, got := sameContent(a, b); want != "" || got != "" {
			add("content", want, got)
		}
	}
	diffs = append(diffs, compareXattrs(rel, a, b, opts.IgnoreXattrPrefixes)...)
	return diffs, false
}

func compareXattrs(rel, a, b string, ignore []string) []Difference {
	xa, err := Xattrs(a, ignore)
	if err != nil {
		return []Difference{{rel, "error", "xattrs", err.Error()}}
	}
	xb, err := Xattrs(b, ignore)
	if err != nil {
		return []Difference{{rel, "xattrs", "readable", err.Error()}}
	}
	var names []string
	for n := range xa {
		names = append(names, n)
	}
	for n := range xb {
		if _, ok := xa[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var diffs []Difference
	for _, n := range names {
		va, oka := xa[n]
		vb, okb := xb[n]
		if oka == okb && va == vb {
			continue
		}
		show := func(v string, ok bool) string {
			if !ok {
				return "absent"
			}
			return fmt.Sprintf("%q", v)
		}
		diffs = append(diffs, Difference{rel, "xattr " + n, show(va, oka), show(vb, okb)})
	}
	return diffs
}

// sameContent compares two regular files by streaming them; it returns
// empty strings when they are equal, else a description of each side.
func sameContent(a, b string) (want, got string) {
	fa, err := os.Open(a)
	if err != nil {
		return err.Error(), "not compared"
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return "readable", err.Error()
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		endA := errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF)
		endB := errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF)
		if ea != nil && !endA {
			return ea.Error(), "not compared"
		}
		if eb != nil && !endB {
			return "readable", fmt.Sprintf("read error after %d bytes: %v", off, eb)
		}
		if i := firstDiff(ba[:na], bb[:nb]); i >= 0 {
			return fmt.Sprintf("byte %d", off+int64(i)), "different"
		}
		off += int64(na)
		if endA || endB {
			if endA != endB || na != nb {
				return fmt.Sprintf("%d more bytes", off), "different length"
			}
			return "", ""
		}
	}
}

// firstDiff returns the index of the first difference of a and b,
// counting a length difference, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// Xattrs returns the extended attributes of a path (not following
// symlinks) by name, leaving out names with one of the ignored prefixes.
// A filesystem without xattr support has none.
func Xattrs(p string, ignore []string) (map[string]string, error) {
	var buf []byte
	for {
		sz, err := unix.Llistxattr(p, nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", p, err)
		}
		if sz == 0 {
			return nil, nil
		}
		buf = make([]byte, sz)
		sz, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", p, err)
		}
		buf = buf[:sz]
		break
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf), "\x00") {
		if name == "" || slices.ContainsFunc(ignore, func(pre string) bool { return strings.HasPrefix(name, pre) }) {
			continue
		}
		v, err := getxattr(p, name)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func getxattr(p, name string) (string, error) {
	for {
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		val := make([]byte, sz)
		if sz == 0 {
			return "", nil
		}
		sz, err = unix.Lgetxattr(p, name, val)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		return string(val[:sz]), nil
	}
}

func devString(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }

func modeType(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %#o", m&unix.S_IFMT)
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "char device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "regular file"
}
