package etcmerge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// node describes one file system object of a test tree. Zero fields mean
// defaults, filled by resolve: mode 0644 (files, fifos, devices) or 0755
// (directories), the caller's uid/gid, the tree's default time.
type node struct {
	kind     byte   // 'f' file, 'd' directory, 'l' symlink, 'p' fifo, 'c' char device, 's' socket
	data     string // file content, symlink target
	mode     uint32 // permission bits including setuid/setgid/sticky
	uid, gid int
	owned    bool // uid/gid set explicitly
	xattrs   map[string]string
	mtime    time.Time
	rdev     uint64
}

func file(data string) node   { return node{kind: 'f', data: data} }
func dir() node               { return node{kind: 'd'} }
func link(target string) node { return node{kind: 'l', data: target} }
func fifo() node              { return node{kind: 'p'} }
func chardev(major, minor uint32) node {
	return node{kind: 'c', rdev: unix.Mkdev(major, minor)}
}

func (n node) perm(m uint32) node { n.mode = m; return n }
func (n node) owner(uid, gid int) node {
	n.uid, n.gid, n.owned = uid, gid, true
	return n
}
func (n node) xattr(k, v string) node {
	x := map[string]string{}
	for a, b := range n.xattrs {
		x[a] = b
	}
	x[k] = v
	n.xattrs = x
	return n
}
func (n node) at(t time.Time) node { n.mtime = t; return n }

// tree maps slash-separated relative paths ("." is the root) to nodes.
type tree map[string]node

func (t tree) clone() tree {
	c := make(tree, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}

// with returns a copy of t with the given nodes set.
func (t tree) with(kv ...any) tree {
	c := t.clone()
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(string)] = kv[i+1].(node)
	}
	return c
}

// without returns a copy of t without the given paths and their subtrees.
func (t tree) without(paths ...string) tree {
	c := t.clone()
	for k := range c {
		for _, p := range paths {
			if k == p || strings.HasPrefix(k, p+"/") {
				delete(c, k)
			}
		}
	}
	return c
}

// pick returns dst with the subtrees at paths replaced by src's.
func pick(dst, src tree, paths ...string) tree {
	c := dst.without(paths...)
	for k, v := range src {
		for _, p := range paths {
			if k == p || strings.HasPrefix(k, p+"/") {
				c[k] = v
			}
		}
	}
	return c
}

// pickNode returns dst with the single nodes at paths taken from src.
func pickNode(dst, src tree, paths ...string) tree {
	c := dst.clone()
	for _, p := range paths {
		c[p] = src[p]
	}
	return c
}

// resolve fills in the defaults.
func resolve(t tree, def time.Time) tree {
	c := t.clone()
	if _, ok := c["."]; !ok {
		c["."] = dir()
	}
	for k, n := range c {
		if n.mode == 0 {
			n.mode = 0o644
			if n.kind == 'd' {
				n.mode = 0o755
			}
			if n.kind == 'l' {
				n.mode = 0o777
			}
		}
		if !n.owned {
			n.uid, n.gid, n.owned = os.Getuid(), os.Getgid(), true
		}
		if n.mtime.IsZero() {
			n.mtime = def
		}
		if n.xattrs == nil {
			n.xattrs = map[string]string{}
		}
		c[k] = n
	}
	return c
}

func depth(p string) int {
	if p == "." {
		return -1
	}
	return strings.Count(p, "/")
}

// build creates root (which must not exist) holding the resolved tree t.
func build(tb testing.TB, root string, t tree) {
	tb.Helper()
	paths := make([]string, 0, len(t))
	for p := range t {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b string) int {
		if d := depth(a) - depth(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, p := range paths {
		n := t[p]
		full := filepath.Join(root, filepath.FromSlash(p))
		var err error
		switch n.kind {
		case 'd':
			err = os.Mkdir(full, 0o700)
		case 'f':
			err = os.WriteFile(full, []byte(n.data), 0o600)
		case 'l':
			err = os.Symlink(n.data, full)
		case 'p':
			err = unix.Mkfifo(full, 0o600)
		case 'c':
			err = unix.Mknod(full, unix.S_IFCHR|0o600, int(n.rdev))
		case 's':
			err = makeSocket(full)
		default:
			err = fmt.Errorf("unknown kind %q", n.kind)
		}
		if err != nil {
			tb.Fatalf("build %s: %v", full, err)
		}
	}
	// Metadata deepest first, times last.
	slices.Reverse(paths)
	for _, p := range paths {
		n := t[p]
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := unix.Lchown(full, n.uid, n.gid); err != nil {
			tb.Fatalf("lchown %s: %v", full, err)
		}
		if n.kind != 'l' {
			if err := unix.Fchmodat(unix.AT_FDCWD, full, n.mode, 0); err != nil {
				tb.Fatalf("chmod %s: %v", full, err)
			}
		}
		for k, v := range n.xattrs {
			if err := unix.Lsetxattr(full, k, []byte(v), 0); err != nil {
				tb.Fatalf("setxattr %s %s: %v", full, k, err)
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(n.mtime.UnixNano()), unix.NsecToTimespec(n.mtime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			tb.Fatalf("utimes %s: %v", full, err)
		}
	}
}

func makeSocket(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrUnix{Name: path})
}

// snapshot reads a directory back into a tree, independently of the
// package's own helpers.
func snapshot(tb testing.TB, root string) tree {
	tb.Helper()
	t := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{mode: st.Mode & 0o7777, uid: int(st.Uid), gid: int(st.Gid), owned: true,
			mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), xattrs: readXattrs(tb, p)}
		switch fi.Mode().Type() {
		case fs.ModeDir:
			n.kind = 'd'
		case 0:
			n.kind = 'f'
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.data = string(b)
		case fs.ModeSymlink:
			n.kind = 'l'
			if n.data, err = os.Readlink(p); err != nil {
				return err
			}
		case fs.ModeNamedPipe:
			n.kind = 'p'
		case fs.ModeDevice | fs.ModeCharDevice:
			n.kind, n.rdev = 'c', st.Rdev
		case fs.ModeSocket:
			n.kind = 's'
		default:
			return fmt.Errorf("%s: unexpected type %v", p, fi.Mode())
		}
		t[rel] = n
		return nil
	})
	if err != nil {
		tb.Fatalf("snapshot %s: %v", root, err)
	}
	return t
}

func readXattrs(tb testing.TB, p string) map[string]string {
	tb.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		tb.Fatalf("listxattr %s: %v", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			tb.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out[name] = string(v[:m])
	}
	return out
}

func (n node) String() string {
	return fmt.Sprintf("%c mode=%04o owner=%d:%d mtime=%d xattrs=%v rdev=%d data=%q",
		n.kind, n.mode, n.uid, n.gid, n.mtime.UnixNano(), n.xattrs, n.rdev, n.data)
}

// diffTrees describes every difference, byte for byte: type, content,
// target, mode, owner, xattrs, mtime.
func diffTrees(got, want tree) []string {
	var out []string
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			out = append(out, fmt.Sprintf("missing %s: want %s", k, w))
		case !wok:
			out = append(out, fmt.Sprintf("unexpected %s: %s", k, g))
		case g.String() != w.String():
			out = append(out, fmt.Sprintf("%s:\n   got  %s\n   want %s", k, g, w))
		}
	}
	return out
}

// leftovers lists the entries of dir other than the allowed ones.
func leftovers(tb testing.TB, dir string, allowed ...string) []string {
	tb.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		tb.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !slices.Contains(allowed, de.Name()) {
			out = append(out, de.Name())
		}
	}
	return out
}
