package testutil

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ExtractTar extracts the tar archive at tarPath into the existing
// directory dir as root, the way
//
//	tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf tarPath -C dir
//
// does: the "./" member sets dir's own metadata; numeric ownership; all 12
// mode bits; every SCHILY.xattr.* PAX record (binary system.posix_acl_*
// and trusted.* included) set with lsetxattr; device nodes, fifos,
// symlinks and hardlinks; sparse members (Go expands them) written with
// holes for their zero blocks, so a 4 GiB sparse file takes little disk;
// and nanosecond mtimes set last, deepest first, without following
// symlinks. Per entry the order is ownership, mode (not on symlinks),
// xattrs. It needs root (RequireRoot) and a filesystem with trusted.*
// xattrs and device nodes (t.TempDir() on ext4 is fine).
func ExtractTar(t testing.TB, tarPath, dir string) {
	t.Helper()
	RequireRoot(t)
	if err := extractTar(tarPath, dir); err != nil {
		t.Fatalf("extract %s into %s: %v", tarPath, dir, err)
	}
}

type pendingTime struct {
	path  string
	depth int
	times [2]unix.Timespec
}

func extractTar(tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var times []pendingTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rel, err := memberPath(hdr.Name)
		if err != nil {
			return err
		}
		target := filepath.Join(dir, rel)
		if err := createMember(tr, hdr, dir, target); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeLink {
			continue // same inode as its target, whose metadata is set
		}
		if err := setMetadata(hdr, target); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		atime := hdr.AccessTime
		if atime.IsZero() {
			atime = hdr.ModTime
		}
		times = append(times, pendingTime{
			path:  target,
			depth: strings.Count(rel, "/") + 1,
			times: [2]unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())},
		})
		if rel == "." {
			times[len(times)-1].depth = 0
		}
	}
	sort.SliceStable(times, func(i, j int) bool { return times[i].depth > times[j].depth })
	for _, pt := range times {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, pt.path, pt.times[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("utimensat %s: %w", pt.path, err)
		}
	}
	return nil
}

// memberPath cleans an archive member name to a path relative to the
// extraction directory ("." for the directory itself), refusing names
// that would escape it.
func memberPath(name string) (string, error) {
	clean := path.Clean("/" + name)
	if clean == "/" {
		return ".", nil
	}
	rel := clean[1:]
	if strings.HasPrefix(rel, "../") || rel == ".." {
		return "", fmt.Errorf("member %q escapes the extraction directory", name)
	}
	return rel, nil
}

func createMember(tr *tar.Reader, hdr *tar.Header, dir, target string) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return writeSparseFile(target, tr, hdr.Size)
	case tar.TypeSymlink:
		return os.Symlink(hdr.Linkname, target)
	case tar.TypeLink:
		rel, err := memberPath(hdr.Linkname)
		if err != nil {
			return err
		}
		return os.Link(filepath.Join(dir, rel), target)
	case tar.TypeChar:
		return unix.Mknod(target, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	case tar.TypeBlock:
		return unix.Mknod(target, unix.S_IFBLK|0o600, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	case tar.TypeFifo:
		return unix.Mknod(target, unix.S_IFIFO|0o600, 0)
	default:
		return fmt.Errorf("unsupported member type %q", hdr.Typeflag)
	}
}

// writeSparseFile writes size bytes from r into a new file, seeking over
// whole 4096-byte blocks of zeros so that they stay holes.
func writeSparseFile(target string, r io.Reader, size int64) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	const block = 4096
	var zero [block]byte
	buf := make([]byte, 256*block)
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			return fmt.Errorf("read member data at %d: %w", off, err)
		}
		p := buf[:n]
		for len(p) > 0 {
			m := min(len(p), block)
			if bytes.Equal(p[:m], zero[:m]) {
				p, off = p[m:], off+int64(m)
				continue
			}
			if _, err := f.WriteAt(p[:m], off); err != nil {
				return err
			}
			p, off = p[m:], off+int64(m)
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}

// setMetadata applies ownership, mode and xattrs, in that order (chown
// clears setuid/setgid bits, so mode comes after it).
func setMetadata(hdr *tar.Header, target string) error {
	if err := unix.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("lchown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Chmod(target, uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	const prefix = "SCHILY.xattr."
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := decodeXattrKeyword(strings.TrimPrefix(k, prefix))
		if err := unix.Lsetxattr(target, name, []byte(hdr.PAXRecords[k]), 0); err != nil {
			return fmt.Errorf("lsetxattr %s: %w", name, err)
		}
	}
	return nil
}

// decodeXattrKeyword undoes GNU tar's escaping of xattr names in PAX
// keywords: "=" is stored as "%3D" and "%" as "%25".
func decodeXattrKeyword(s string) string {
	return strings.NewReplacer("%3D", "=", "%25", "%").Replace(s)
}
