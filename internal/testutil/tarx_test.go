package testutil

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExtractTarMatchesGNUTar extracts every golden tree.tar with
// ExtractTar and with GNU tar (the command the golden README names) and
// compares type, mode, owner, size, rdev, mtime (ns), symlink target,
// xattrs, content and link count of every entry.
func TestExtractTarMatchesGNUTar(t *testing.T) {
	RequireRoot(t)
	tarTool := RequireTool(t, "tar")
	golden := GoldenDir(t)
	n := 0
	for _, c := range GoldenCases(t) {
		tarPath := filepath.Join(golden, c, "tree.tar")
		if _, err := os.Stat(tarPath); err != nil {
			continue
		}
		n++
		t.Run(c, func(t *testing.T) {
			if c == "hugefile" && !Long() {
				t.Skip("4 GiB sparse file: set CFS_TEST_LONG=1")
			}
			ours := filepath.Join(t.TempDir(), "ours")
			theirs := filepath.Join(t.TempDir(), "theirs")
			for _, d := range []string{ours, theirs} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			ExtractTar(t, tarPath, ours)
			t.Logf("ExtractTar took %v", time.Since(start))
			out, err := exec.Command(tarTool, "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner",
				"-xpf", tarPath, "-C", theirs).CombinedOutput()
			if err != nil {
				t.Fatalf("GNU tar: %v\n%s", err, out)
			}
			a, b := describeTree(t, ours), describeTree(t, theirs)
			if len(a) < 1 {
				t.Fatal("nothing extracted")
			}
			if strings.Join(a, "\n") != strings.Join(b, "\n") {
				t.Fatalf("ExtractTar differs from GNU tar:\n%s", lineDiff(a, b))
			}
			if c == "large" {
				// Sparse members must stay sparse.
				var used int64
				filepath.WalkDir(ours, func(p string, d fs.DirEntry, err error) error {
					if st, err := os.Lstat(p); err == nil {
						used += st.Sys().(*syscall.Stat_t).Blocks * 512
					}
					return nil
				})
				if used > 16<<20 {
					t.Fatalf("extracted large tree takes %d bytes on disk: sparse files were written out", used)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no golden tree.tar found")
	}
}

// describeTree returns one line per entry below root (root included) with
// everything ExtractTar must reproduce.
func describeTree(t *testing.T, root string) []string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%q mode=%o uid=%d gid=%d rdev=%d mtime=%d.%09d", rel, st.Mode, st.Uid, st.Gid, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d nlink=%d sum=%x", st.Size, st.Nlink, fnv(data))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" -> %q", target)
		}
		line += " xattrs=" + xattrString(t, p)
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func fnv(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func xattrString(t *testing.T, p string) string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range bytes.Split(buf[:sz], []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		vsz, err := unix.Lgetxattr(p, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]byte, vsz)
		if _, err := unix.Lgetxattr(p, n, v); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, fmt.Sprintf("%s=%x", n, v))
	}
	return strings.Join(parts, ",")
}

func lineDiff(a, b []string) string {
	var out strings.Builder
	ma := map[string]bool{}
	for _, l := range a {
		ma[l] = true
	}
	mb := map[string]bool{}
	for _, l := range b {
		mb[l] = true
	}
	for _, l := range a {
		if !mb[l] {
			fmt.Fprintf(&out, "- ours:   %s\n", l)
		}
	}
	for _, l := range b {
		if !ma[l] {
			fmt.Fprintf(&out, "+ GNU tar: %s\n", l)
		}
	}
	return out.String()
}
