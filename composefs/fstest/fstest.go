// Package fstest compares file trees: the source directory of an image with
// a mounted image (kernel or FUSE), path by path — type, mode, owner,
// size, mtime, rdev, xattrs, symlink target and content.
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

	"golang.org/x/sys/unix"
)

// Options tunes CompareTrees.
type Options struct {
	// IgnoreXattrPrefixes lists xattr name prefixes left out of the
	// comparison (e.g. "security.selinux" when labels differ).
	IgnoreXattrPrefixes []string
	// SkipDirTimes leaves directory mtimes out.
	SkipDirTimes bool
}

// CompareTrees returns one line per difference between the trees at want
// and got (empty when they are the same). Directory sizes and link counts
// are not compared (they depend on the filesystem).
func CompareTrees(want, got string, opts Options) ([]string, error) {
	var diffs []string
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		diffs = append(diffs, compareEntry(rel, p, filepath.Join(got, rel), opts)...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] {
			diffs = append(diffs, rel+": only in the second tree")
		}
		return nil
	})
	return diffs, err
}

func compareEntry(rel, a, b string, opts Options) []string {
	var sa, sb unix.Stat_t
	if err := unix.Lstat(a, &sa); err != nil {
		return []string{fmt.Sprintf("%s: %v", rel, err)}
	}
	if err := unix.Lstat(b, &sb); err != nil {
		return []string{fmt.Sprintf("%s: missing in the second tree: %v", rel, err)}
	}
	var out []string
	add := func(format string, args ...any) { out = append(out, rel+": "+fmt.Sprintf(format, args...)) }
	if sa.Mode != sb.Mode {
		add("mode %o != %o", sa.Mode, sb.Mode)
		return out
	}
	if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		add("owner %d:%d != %d:%d", sa.Uid, sa.Gid, sb.Uid, sb.Gid)
	}
	isDir := sa.Mode&unix.S_IFMT == unix.S_IFDIR
	if !isDir && sa.Size != sb.Size {
		add("size %d != %d", sa.Size, sb.Size)
	}
	if !(isDir && opts.SkipDirTimes) && sa.Mtim != sb.Mtim {
		add("mtime %d.%09d != %d.%09d", sa.Mtim.Sec, sa.Mtim.Nsec, sb.Mtim.Sec, sb.Mtim.Nsec)
	}
	switch sa.Mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		if sa.Rdev != sb.Rdev {
			add("rdev %d != %d", sa.Rdev, sb.Rdev)
		}
	case unix.S_IFLNK:
		ta, _ := os.Readlink(a)
		tb, _ := os.Readlink(b)
		if ta != tb {
			add("symlink %q != %q", ta, tb)
		}
	case unix.S_IFREG:
		if err := sameContent(a, b); err != nil {
			add("content: %v", err)
		}
	}
	xa, err := Xattrs(a, opts.IgnoreXattrPrefixes)
	if err != nil {
		add("xattrs: %v", err)
	}
	xb, err := Xattrs(b, opts.IgnoreXattrPrefixes)
	if err != nil {
		add("xattrs: %v", err)
	}
	if fmt.Sprint(xa) != fmt.Sprint(xb) {
		add("xattrs %q != %q", xa, xb)
	}
	return out
}

func sameContent(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("differs near offset %d", off)
		}
		off += int64(na)
		doneA := errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF)
		doneB := errors.Is(eb, io.EOF) || errors.Is(eb, io.ErrUnexpectedEOF)
		if ea != nil && !doneA {
			return ea
		}
		if eb != nil && !doneB {
			return eb
		}
		if doneA || doneB {
			if doneA != doneB {
				return fmt.Errorf("lengths differ after %d bytes", off)
			}
			return nil
		}
	}
}

// Xattrs returns "name=value" strings of a path's xattrs (not following
// symlinks), sorted, leaving out names with one of the ignored prefixes.
func Xattrs(p string, ignore []string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" || slices.ContainsFunc(ignore, func(pre string) bool { return strings.HasPrefix(name, pre) }) {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(p, name, val); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		out = append(out, name+"="+string(val[:vsz]))
	}
	slices.Sort(out)
	return out, nil
}
