//go:build linux

package fstest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// makeTree writes the same tree under dir every time it is called.
func makeTree(t *testing.T, dir string, root bool) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub/deeper"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "file"), []byte("hello, world\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "sub/big"), []byte(strings.Repeat("0123456789", 20000)), 0o600))
	must(os.WriteFile(filepath.Join(dir, "sub/deeper/empty"), nil, 0o444))
	must(os.Symlink("../file", filepath.Join(dir, "sub/link")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(unix.Setxattr(filepath.Join(dir, "file"), "user.a", []byte("1"), 0))
	must(unix.Setxattr(filepath.Join(dir, "file"), "user.empty", nil, 0))
	if root {
		must(unix.Mknod(filepath.Join(dir, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
		must(os.Lchown(filepath.Join(dir, "sub/big"), 1000, 100))
		must(unix.Setxattr(filepath.Join(dir, "sub"), "trusted.overlay.redirect", []byte("/x"), 0))
	}
	// Fixed times, deepest first (writing a child changes its dir's mtime).
	ts := time.Unix(1700000000, 123456789)
	for _, p := range []string{"sub/deeper/empty", "sub/deeper", "sub/big", "file", "fifo", "sub", "."} {
		must(os.Chtimes(filepath.Join(dir, p), ts, ts))
	}
	must(unix.Lutimes(filepath.Join(dir, "sub/link"), []unix.Timeval{{Sec: 1700000000}, {Sec: 1700000000}}))
	if root {
		must(os.Chtimes(filepath.Join(dir, "dev"), ts, ts))
	}
	must(os.Chtimes(filepath.Join(dir, "sub"), ts, ts))
	must(os.Chtimes(dir, ts, ts))
}

func pair(t *testing.T) (a, b string, root bool) {
	root = os.Geteuid() == 0
	a, b = filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		makeTree(t, d, root)
	}
	return a, b, root
}

func TestSameTree(t *testing.T) {
	a, b, _ := pair(t)
	diffs, err := CompareTrees(a, b, Options{})
	if err != nil || len(diffs) != 0 {
		t.Fatalf("identical trees: %v %v", diffs, err)
	}
}

// Each mutation of the second tree must show up as exactly the expected
// difference.
func TestDifferences(t *testing.T) {
	ts := time.Unix(1700000000, 123456789)
	for _, tc := range []struct {
		name     string
		root     bool
		mutate   func(b string) error
		path     string
		what     string
		opts     Options
		noDiffer bool
	}{
		{name: "mode", path: "file", what: "mode", mutate: func(b string) error { return unix.Chmod(filepath.Join(b, "file"), 0o4644) }},
		{name: "content same size", path: "sub/big", what: "content", mutate: func(b string) error {
			f, err := os.OpenFile(filepath.Join(b, "sub/big"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("X"), 150000)
			if err == nil {
				err = os.Chtimes(filepath.Join(b, "sub/big"), ts, ts)
			}
			return err
		}},
		{name: "size", path: "file", what: "size", mutate: func(b string) error {
			if err := os.WriteFile(filepath.Join(b, "file"), []byte("hello"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(filepath.Join(b, "file"), ts, ts)
		}},
		{name: "mtime ns", path: "sub/deeper/empty", what: "mtime", mutate: func(b string) error {
			return os.Chtimes(filepath.Join(b, "sub/deeper/empty"), ts, ts.Add(1))
		}},
		{name: "dir mtime skipped", path: "sub/deeper", what: "mtime", opts: Options{SkipDirTimes: true}, noDiffer: true, mutate: func(b string) error {
			return os.Chtimes(filepath.Join(b, "sub/deeper"), ts, ts.Add(time.Second))
		}},
		{name: "symlink target", path: "sub/link", what: "symlink", mutate: func(b string) error {
			p := filepath.Join(b, "sub/link")
			if err := os.Remove(p); err != nil {
				return err
			}
			if err := os.Symlink("../fil\n", p); err != nil { // same length
				return err
			}
			return unix.Lutimes(p, []unix.Timeval{{Sec: 1700000000}, {Sec: 1700000000}})
		}},
		{name: "xattr value", path: "file", what: "xattr user.a", mutate: func(b string) error {
			return unix.Setxattr(filepath.Join(b, "file"), "user.a", []byte("2"), 0)
		}},
		{name: "xattr missing", path: "file", what: "xattr user.empty", mutate: func(b string) error {
			return unix.Removexattr(filepath.Join(b, "file"), "user.empty")
		}},
		{name: "xattr ignored", path: "file", what: "xattr user.a", opts: Options{IgnoreXattrPrefixes: []string{"user."}}, noDiffer: true, mutate: func(b string) error {
			return unix.Setxattr(filepath.Join(b, "file"), "user.a", []byte("2"), 0)
		}},
		{name: "type", path: "fifo", what: "type", mutate: func(b string) error {
			p := filepath.Join(b, "fifo")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, nil, 0o640)
		}},
		{name: "missing", path: "sub/deeper", what: "missing", mutate: func(b string) error {
			return os.RemoveAll(filepath.Join(b, "sub/deeper"))
		}},
		{name: "extra", path: "sub/new", what: "extra", mutate: func(b string) error {
			return os.Mkdir(filepath.Join(b, "sub/new"), 0o755)
		}},
		{name: "owner", root: true, path: "sub/big", what: "owner", mutate: func(b string) error {
			return os.Lchown(filepath.Join(b, "sub/big"), 1000, 101)
		}},
		{name: "rdev", root: true, path: "dev", what: "rdev", mutate: func(b string) error {
			p := filepath.Join(b, "dev")
			if err := os.Remove(p); err != nil {
				return err
			}
			if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70001))); err != nil {
				return err
			}
			return os.Chtimes(p, ts, ts)
		}},
		{name: "trusted.overlay xattr compared", root: true, path: "sub", what: "xattr trusted.overlay.redirect", mutate: func(b string) error {
			return unix.Removexattr(filepath.Join(b, "sub"), "trusted.overlay.redirect")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testutil.RequireRoot(t)
			}
			a, b, _ := pair(t)
			if err := tc.mutate(b); err != nil {
				t.Fatal(err)
			}
			// Restore the parent directories' times the mutation moved.
			for _, p := range []string{"sub/deeper", "sub", "."} {
				if _, err := os.Stat(filepath.Join(b, p)); err == nil && !(tc.noDiffer && p == tc.path) {
					if err := os.Chtimes(filepath.Join(b, p), ts, ts); err != nil {
						t.Fatal(err)
					}
				}
			}
			diffs, err := CompareTrees(a, b, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.noDiffer {
				if len(diffs) != 0 {
					t.Fatalf("want no differences, got %v", diffs)
				}
				return
			}
			if len(diffs) != 1 || diffs[0].Path != tc.path || diffs[0].What != tc.what {
				t.Fatalf("want one %q difference at %s, got %v", tc.what, tc.path, diffs)
			}
			if diffs[0].Want == diffs[0].Got {
				t.Errorf("difference does not show the two sides: %v", diffs[0])
			}
		})
	}
}

func TestXattrs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("v", 3000)
	for n, v := range map[string]string{"user.big": big, "user.bin": "a\x00b", "user.skip.me": "x"} {
		if err := unix.Setxattr(p, n, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	x, err := Xattrs(p, []string{"user.skip."})
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != 2 || x["user.big"] != big || x["user.bin"] != "a\x00b" {
		t.Fatalf("xattrs %q", x)
	}
}
