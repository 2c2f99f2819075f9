package composefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
)

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func lstat(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func mustLookup(t testing.TB, root *Node, path string) *Node {
	t.Helper()
	n := root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		n = n.Lookup(part)
		if n == nil {
			t.Fatalf("%s not in tree", path)
		}
	}
	return n
}

// TestBuildFromDirEntries checks each rule of spec §2 on a small tree.
func TestBuildFromDirEntries(t *testing.T) {
	dir := t.TempDir()
	sizes := map[string]int{"empty": 0, "one": 1, "s63": 63, "s64": 64, "s65": 65, "s4096": 4096, "s5000": 5000}
	for name, n := range sizes {
		writeFile(t, filepath.Join(dir, name), randBytes(uint64(n), n))
	}
	writeFile(t, filepath.Join(dir, "sub/deeper/file"), []byte(strings.Repeat("x", 100)))
	if err := os.Link(filepath.Join(dir, "s5000"), filepath.Join(dir, "sub/hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../s65", filepath.Join(dir, "sub/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := unix.Chmod(filepath.Join(dir, "s65"), 0o4751); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(dir, "s64"), "user.b", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(dir, "s64"), "user.a", []byte{0, 1, 0xff}, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "sub/link"), []unix.Timespec{{Sec: 5, Nsec: 6}, {Sec: 1234, Nsec: 567890123}}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}

	root, err := BuildFromDir(context.Background(), dir, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Validate(); err != nil {
		t.Fatal(err)
	}
	if root.Name != "" || !root.IsDir() {
		t.Fatalf("root %q mode %o", root.Name, root.Mode)
	}
	rst := lstat(t, dir)
	if root.Mode != rst.Mode || root.Mtime != (Timespec{rst.Mtim.Sec, uint32(rst.Mtim.Nsec)}) {
		t.Fatalf("root mode %o mtime %v, lstat %o %v", root.Mode, root.Mtime, rst.Mode, rst.Mtim)
	}
	var names []string
	for _, c := range root.Children {
		names = append(names, c.Name)
		if c.Parent() != root {
			t.Fatalf("%s: parent not set", c.Name)
		}
	}
	want := []string{"dangling", "empty", "fifo", "one", "s4096", "s5000", "s63", "s64", "s65", "sock", "sub"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("root children %q, want %q", names, want)
	}
	for name, size := range sizes {
		n := mustLookup(t, root, name)
		data := randBytes(uint64(size), size)
		st := lstat(t, filepath.Join(dir, name))
		if n.Size != uint64(size) || n.Mode != st.Mode || n.UID != st.Uid || n.GID != st.Gid || n.Nlink != 1 {
			t.Errorf("%s: size %d mode %o uid %d gid %d nlink %d; lstat %d %o %d %d", name, n.Size, n.Mode, n.UID, n.GID, n.Nlink, st.Size, st.Mode, st.Uid, st.Gid)
		}
		if n.Mtime != (Timespec{st.Mtim.Sec, uint32(st.Mtim.Nsec)}) {
			t.Errorf("%s: mtime %v, lstat %v", name, n.Mtime, st.Mtim)
		}
		switch {
		case size == 0:
			if n.Content != nil || n.Digest != nil || n.Payload != "" {
				t.Errorf("%s: empty file has content/digest/payload", name)
			}
		case size <= 64:
			if !bytes.Equal(n.Content, data) || n.Digest != nil || n.Payload != "" {
				t.Errorf("%s: want inline content only, got content %d bytes, digest %v, payload %q", name, len(n.Content), n.Digest, n.Payload)
			}
		default:
			d := fsverity.DigestBytes(data)
			if n.Content != nil || n.Digest == nil || *n.Digest != d || n.Payload != d.ObjectPath() {
				t.Errorf("%s: want digest %s payload %s, got content %d bytes, digest %v, payload %q", name, d, d.ObjectPath(), len(n.Content), n.Digest, n.Payload)
			}
		}
	}
	// Hardlinks are not detected: an independent node, nlink 1.
	hl, orig := mustLookup(t, root, "sub/hardlink"), mustLookup(t, root, "s5000")
	if hl == orig || hl.IsHardlink() || hl.Nlink != 1 || *hl.Digest != *orig.Digest {
		t.Errorf("hardlink: node %p link %v nlink %d", hl, hl.Link, hl.Nlink)
	}
	if st := lstat(t, filepath.Join(dir, "s5000")); st.Nlink != 2 {
		t.Fatalf("test setup: nlink %d", st.Nlink)
	}
	link := mustLookup(t, root, "sub/link")
	if !link.IsSymlink() || link.Payload != "../s65" || link.Size != 6 || link.Mtime != (Timespec{1234, 567890123}) {
		t.Errorf("symlink: mode %o payload %q size %d mtime %v", link.Mode, link.Payload, link.Size, link.Mtime)
	}
	if d := mustLookup(t, root, "dangling"); d.Payload != "/nonexistent/target" {
		t.Errorf("dangling symlink payload %q", d.Payload)
	}
	if f := mustLookup(t, root, "fifo"); f.Type() != TypeFifo || f.Mode&ModePermMask != 0o640 {
		t.Errorf("fifo mode %o", f.Mode)
	}
	if s := mustLookup(t, root, "sock"); s.Type() != TypeSocket {
		t.Errorf("socket mode %o", s.Mode)
	}
	if m := mustLookup(t, root, "s65").Mode; m != TypeRegular|0o4751 {
		t.Errorf("setuid file mode %o", m)
	}
	x := mustLookup(t, root, "s64").Xattrs
	if !reflect.DeepEqual(x, []Xattr{{"user.a", "\x00\x01\xff"}, {"user.b", "2"}}) {
		t.Errorf("xattrs %q", x)
	}
	if sub := mustLookup(t, root, "sub"); len(sub.Children) != 3 || sub.Children[0].Name != "deeper" {
		t.Errorf("sub children %d", len(sub.Children))
	}
}

// TestBuildOptions covers UseEpoch, SkipXattrs, UserXattrs, SkipDevices
// and the rejected combination.
func TestBuildOptions(t *testing.T) {
	testutil.RequireRoot(t) // device nodes and trusted.* xattrs
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("data"))
	writeFile(t, filepath.Join(dir, "d/g"), randBytes(1, 100))
	for _, x := range []struct{ name, val string }{{"user.u", "1"}, {"trusted.t", "2"}, {"security.s", "3"}} {
		if err := unix.Lsetxattr(filepath.Join(dir, "f"), x.name, []byte(x.val), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(filepath.Join(dir, "d/whiteout"), unix.S_IFCHR|0o644, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 1))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	build := func(o BuildOptions) *Node {
		t.Helper()
		root, err := BuildFromDir(ctx, dir, o)
		if err != nil {
			t.Fatal(err)
		}
		return root
	}
	xattrNames := func(n *Node) string {
		var s []string
		for _, x := range n.Xattrs {
			s = append(s, x.Name+"="+x.Value)
		}
		return strings.Join(s, ",")
	}

	all := build(BuildOptions{})
	if got := xattrNames(mustLookup(t, all, "f")); got != "security.s=3,trusted.t=2,user.u=1" {
		t.Errorf("default xattrs %q", got)
	}
	if n := mustLookup(t, all, "chr"); n.Rdev != unix.Mkdev(300, 70000) || n.Type() != TypeChar {
		t.Errorf("chr rdev %d mode %o", n.Rdev, n.Mode)
	}
	if n := mustLookup(t, all, "d/whiteout"); !n.IsWhiteout() {
		t.Errorf("whiteout mode %o rdev %d", n.Mode, n.Rdev)
	}
	if got := xattrNames(mustLookup(t, build(BuildOptions{UserXattrs: true}), "f")); got != "user.u=1" {
		t.Errorf("UserXattrs: %q", got)
	}
	skip := build(BuildOptions{SkipXattrs: true})
	skip.Walk(func(p string, n *Node) error {
		if len(n.Xattrs) > 0 {
			t.Errorf("SkipXattrs: %s has %q", p, xattrNames(n))
		}
		return nil
	})

	epoch := build(BuildOptions{UseEpoch: true})
	epoch.Walk(func(p string, n *Node) error {
		if n.Mtime != (Timespec{}) {
			t.Errorf("UseEpoch: %s mtime %v", p, n.Mtime)
		}
		return nil
	})
	if mustLookup(t, all, "f").Mtime == (Timespec{}) {
		t.Error("default build has a zero mtime")
	}

	nodev := build(BuildOptions{SkipDevices: true})
	for _, p := range []string{"blk", "chr", "d/whiteout"} {
		if mustLookup(t, all, filepath.Dir(p)).Lookup(filepath.Base(p)) == nil {
			t.Errorf("default build lacks %s", p)
		}
		if mustLookup(t, nodev, filepath.Dir(p)).Lookup(filepath.Base(p)) != nil {
			t.Errorf("SkipDevices kept %s", p)
		}
	}
	if nodev.Lookup("fifo") == nil || mustLookup(t, nodev, "d").Lookup("g") == nil {
		t.Error("SkipDevices dropped a fifo or a file")
	}

	_, err := BuildFromDir(ctx, dir, BuildOptions{SkipXattrs: true, UserXattrs: true})
	if !errors.Is(err, ErrBuildOptions) {
		t.Errorf("SkipXattrs+UserXattrs: %v, want ErrBuildOptions", err)
	}
	_, err = BuildFromDir(ctx, dir, BuildOptions{Threads: -1})
	if !errors.Is(err, ErrBuildOptions) {
		t.Errorf("Threads -1: %v, want ErrBuildOptions", err)
	}
}

// describeTree renders a tree completely, for equality checks.
func describeTree(root *Node) string {
	var b strings.Builder
	root.Walk(func(p string, n *Node) error {
		fmt.Fprintf(&b, "%q %o %d %d %d %d %v %d %q %x %v %q\n", p, n.Mode, n.Nlink, n.UID, n.GID, n.Rdev, n.Mtime, n.Size, n.Payload, n.Content, n.Digest, n.Xattrs)
		return nil
	})
	return b.String()
}

// makeTree creates files deterministic in content and shape: nested dirs,
// mixed sizes (many identical), symlinks.
func makeTree(t testing.TB, dir string, files int) (regular int, total int64) {
	r := rand.New(rand.NewPCG(uint64(files), 7))
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d/e%d", i%23, i%5))
		var size int
		switch r.IntN(10) {
		case 0:
			size = 0
		case 1, 2, 3:
			size = r.IntN(65)
		case 4, 5, 6, 7:
			size = 65 + r.IntN(16<<10)
		case 8:
			size = 100 // many identical objects
		default:
			size = r.IntN(1 << 20)
		}
		p := filepath.Join(sub, fmt.Sprintf("f%05d", i))
		if i%50 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(fmt.Sprintf("target-%d", i), p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data := randBytes(uint64(i), size)
		if size == 100 {
			data = bytes.Repeat([]byte{'z'}, 100)
		}
		writeFile(t, p, data)
		regular++
		total += int64(size)
	}
	return regular, total
}

// TestBuildDeterministic builds one tree with different thread counts and
// expects identical results, and progress reports that add up.
func TestBuildDeterministic(t *testing.T) {
	dir := t.TempDir()
	regular, total := makeTree(t, dir, 600)
	var ref string
	for _, threads := range []int{1, 2, 8, 0} {
		var mu sync.Mutex
		var reports []BuildProgress
		root, err := BuildFromDir(context.Background(), dir, BuildOptions{
			Threads:  threads,
			Progress: func(p BuildProgress) { mu.Lock(); reports = append(reports, p); mu.Unlock() },
		})
		if err != nil {
			t.Fatal(err)
		}
		got := describeTree(root)
		if ref == "" {
			ref = got
		} else if got != ref {
			t.Fatalf("threads=%d: tree differs from threads=1", threads)
		}
		last := reports[len(reports)-1]
		if !last.WalkDone || last.Files != int64(regular) || last.TotalFiles != int64(regular) || last.Bytes != total || last.TotalBytes != total {
			t.Fatalf("threads=%d: final progress %+v, want %d files, %d bytes", threads, last, regular, total)
		}
		for i := 1; i < len(reports); i++ {
			if reports[i].Files < reports[i-1].Files || reports[i].Bytes < reports[i-1].Bytes {
				t.Fatalf("progress went backwards: %+v after %+v", reports[i], reports[i-1])
			}
		}
	}
	if !strings.Contains(ref, "target-0") {
		t.Fatal("tree description lacks the symlinks")
	}
}

// TestBuildWithStore checks that a store receives exactly the files with
// external content, once each, and that an all-inline tree leaves none.
func TestBuildWithStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	makeTree(t, dir, 300)
	storeDir := filepath.Join(t.TempDir(), "objects")
	store, err := objstore.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := BuildFromDir(ctx, dir, BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	want := map[fsverity.Digest]bool{}
	root.Walk(func(p string, n *Node) error {
		if n.HasExternalData() {
			want[*n.Digest] = true
		}
		return nil
	})
	got := map[fsverity.Digest]bool{}
	if err := store.Walk(ctx, func(d fsverity.Digest) error {
		got[d] = true
		return store.Verify(ctx, d)
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || len(want) < 100 {
		t.Fatalf("store has %d objects, tree references %d", len(got), len(want))
	}
	// A second build into the same store verifies and keeps the objects.
	root2, err := BuildFromDir(ctx, dir, BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if describeTree(root2) != describeTree(root) {
		t.Fatal("second build differs")
	}
	// A corrupted object is detected by the next build, naming it.
	var victim fsverity.Digest
	for d := range want {
		victim = d
		break
	}
	if err := os.WriteFile(store.Path(victim), []byte("garbage, certainly longer than sixty-four bytes of content......"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = BuildFromDir(ctx, dir, BuildOptions{Store: store})
	var ce *objstore.CorruptObjectError
	if !errors.As(err, &ce) || ce.Digest != victim || !strings.Contains(err.Error(), store.Path(victim)) {
		t.Fatalf("build over a corrupt object: %v", err)
	}

	// All-inline tree: no store directory appears.
	small := t.TempDir()
	writeFile(t, filepath.Join(small, "a"), []byte("tiny"))
	writeFile(t, filepath.Join(small, "b/c"), nil)
	emptyStore := filepath.Join(t.TempDir(), "none")
	s2, err := objstore.Open(emptyStore)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildFromDir(ctx, small, BuildOptions{Store: s2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(emptyStore); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("all-inline build created the store (lstat: %v)", err)
	}
}

// TestBuildLongPaths builds a tree whose paths exceed PATH_MAX.
func TestBuildLongPaths(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("n", 250)
	depth := 24 // 24 * 251 bytes > 6000
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	data := randBytes(99, 1000)
	ffd, err := unix.Openat(fd, "leaf", unix.O_WRONLY|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(ffd, data)
	unix.Close(ffd)
	if err := unix.Symlinkat("../x", fd, "link"); err != nil {
		t.Fatal(err)
	}
	xerr := unix.Fsetxattr(fd, "user.deep", []byte("yes"), 0)
	unix.Close(fd)
	if xerr != nil {
		t.Fatal(xerr)
	}
	store, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := BuildFromDir(context.Background(), dir, BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	n := root
	for range depth {
		n = n.Lookup(name)
		if n == nil {
			t.Fatal("deep directory missing")
		}
	}
	if v, _ := n.GetXattr("user.deep"); v != "yes" {
		t.Errorf("deep dir xattr %q", v)
	}
	leaf := n.Lookup("leaf")
	if leaf == nil || leaf.Digest == nil || *leaf.Digest != fsverity.DigestBytes(data) {
		t.Fatalf("deep leaf %+v", leaf)
	}
	if l := n.Lookup("link"); l == nil || l.Payload != "../x" {
		t.Fatalf("deep symlink %+v", l)
	}
	if err := store.Verify(context.Background(), *leaf.Digest); err != nil {
		t.Fatal(err)
	}
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := BuildFromDir(ctx, missing, BuildOptions{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing dir: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, []byte("x"))
	if _, err := BuildFromDir(ctx, file, BuildOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), file) {
		t.Errorf("file as root: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildFromDir(ctx, link, BuildOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("symlink as root (never followed): %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	dir := t.TempDir()
	makeTree(t, dir, 50)
	if _, err := BuildFromDir(cctx, dir, BuildOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestBuildUnreadable runs as an unprivileged user (re-executing the test
// binary when root) so that permissions apply: unreadable files and
// directories are errors naming the path and wrapping fs.ErrPermission.
func TestBuildUnreadable(t *testing.T) {
	if os.Getenv("CFS_BUILD_HELPER") != "" {
		unreadableHelper(t, os.Getenv("CFS_BUILD_HELPER"))
		return
	}
	// Everything the unprivileged helper touches must be reachable by it:
	// t.TempDir() and the go test binary's directory are mode 0700.
	base, err := os.MkdirTemp("", "cfs-unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "composefs.test")
	if os.Geteuid() == 0 {
		exe, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, exe, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ name, bad string }{
		{"file", "secret/big"},
		{"inline", "secret/small"},
		{"dir", "locked"},
	} {
		dir := filepath.Join(base, c.name)
		writeFile(t, filepath.Join(dir, "ok"), randBytes(1, 500))
		switch c.name {
		case "file":
			writeFile(t, filepath.Join(dir, c.bad), randBytes(2, 500))
		case "inline":
			writeFile(t, filepath.Join(dir, c.bad), []byte("short"))
		case "dir":
			writeFile(t, filepath.Join(dir, c.bad, "inner"), []byte("x"))
		}
		if err := os.Chmod(filepath.Join(dir, c.bad), 0); err != nil {
			t.Fatal(err)
		}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if p != filepath.Join(dir, c.bad) {
				os.Chown(p, 65534, 65534)
			}
			return nil
		})
		want := filepath.Join(dir, c.bad)
		if os.Geteuid() != 0 {
			unreadableHelper(t, dir+"\x00"+want)
			continue
		}
		cmd := exec.Command(bin, "-test.run=^TestBuildUnreadable$", "-test.v")
		cmd.Env = append(os.Environ(), "CFS_BUILD_HELPER="+dir+"\x01"+want)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: helper as uid 65534 failed: %v\n%s", c.name, err, out)
		}
		if !strings.Contains(string(out), "helper-ok") {
			t.Fatalf("%s: helper did not run:\n%s", c.name, out)
		}
	}
}

func unreadableHelper(t *testing.T, arg string) {
	dir, want, _ := strings.Cut(strings.ReplaceAll(arg, "\x01", "\x00"), "\x00")
	_, err := BuildFromDir(context.Background(), dir, BuildOptions{})
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("build of %s: %v, want a permission error", dir, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
	t.Log("helper-ok")
}

// TestBuildSparseFiles checks digests of files with holes (hashed without
// reading the holes) against a plain read of the same files.
func TestBuildSparseFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	layouts := map[string][]int64{ // offsets of 1-byte writes; last entry = size
		"hole-start":  {5 << 20, 5<<20 + 1},
		"hole-middle": {0, 3 << 20, 4<<20 + 17},
		"hole-end":    {100, 8 << 20},
		"all-hole":    {10000000},
		"dense":       {},
	}
	for name, offs := range layouts {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "dense" {
			f.Write(randBytes(5, 300000))
		}
		for i, off := range offs {
			if i == len(offs)-1 {
				if err := f.Truncate(off); err != nil {
					t.Fatal(err)
				}
				break
			}
			if _, err := f.WriteAt([]byte{byte(i + 1)}, off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	root, err := BuildFromDir(ctx, dir, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name := range layouts {
		p := filepath.Join(dir, name)
		want, size, err := fsverity.DigestFile(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		n := mustLookup(t, root, name)
		if n.Digest == nil || *n.Digest != want || n.Size != uint64(size) {
			t.Errorf("%s: digest %v size %d, want %s %d", name, n.Digest, n.Size, want, size)
		}
		st := lstat(t, p)
		if name != "dense" && !isSparse(&st) {
			t.Errorf("%s: test file is not sparse (%d blocks)", name, st.Blocks)
		}
	}
}

// TestBuildDetectsChange feeds hashFile a file that changed after it was
// lstat'ed: the build fails with ErrSourceChanged and the object it had
// already stored is taken back.
func TestBuildDetectsChange(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeFile(t, p, randBytes(1, 1000))
	before := lstat(t, p)
	writeFile(t, p, randBytes(2, 1000)) // same size, new content
	later := unix.NsecToTimespec(before.Mtim.Nano() + 1e9)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{later, later}, 0); err != nil {
		t.Fatal(err)
	}
	store, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	b := newBuilder(ctx, dir, BuildOptions{Store: store})
	defer b.cancel()
	h := fsverity.NewHasher(fsverity.SHA256)
	buf := make([]byte, hashBufSize)
	node := &Node{}
	err = b.hashFile(fileTask{node: node, rel: "f", key: keyOf(&before)}, h, buf)
	if !errors.Is(err, ErrSourceChanged) || !strings.Contains(err.Error(), p) {
		t.Fatalf("changed file: %v, want ErrSourceChanged naming %s", err, p)
	}
	if node.Digest != nil {
		t.Error("digest recorded for a changed file")
	}
	n := 0
	store.Walk(ctx, func(fsverity.Digest) error { n++; return nil })
	if n != 0 {
		t.Errorf("store keeps %d objects after the change was detected", n)
	}

	// A file replaced by another one (new inode) is detected at open.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, randBytes(1, 1000))
	err = b.hashFile(fileTask{node: node, rel: "f", key: keyOf(&before)}, h, buf)
	if !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("replaced file: %v, want ErrSourceChanged", err)
	}

	// Unchanged: the key matches and the digest is set.
	now := lstat(t, p)
	if err := b.hashFile(fileTask{node: node, rel: "f", key: keyOf(&now)}, h, buf); err != nil {
		t.Fatal(err)
	}
	if node.Digest == nil || *node.Digest != fsverity.DigestBytes(randBytes(1, 1000)) {
		t.Fatalf("digest %v", node.Digest)
	}
}

// A build with a store that is cancelled once every file has been copied
// (the last Progress call comes before the objects are published) leaves
// neither objects nor temporary files in the store.
func TestBuildCancelledLeavesStoreEmpty(t *testing.T) {
	dir := t.TempDir()
	const files = 20
	for i := range files {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%02d", i)), bytes.Repeat([]byte{byte(i + 1)}, 100+i*1000))
	}
	storeDir := filepath.Join(t.TempDir(), "objects")
	store, err := objstore.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sawAll bool
	_, err = BuildFromDir(ctx, dir, BuildOptions{Store: store, Progress: func(p BuildProgress) {
		if p.WalkDone && p.Files == files {
			sawAll = true
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled build: %v, want context.Canceled", err)
	}
	if !sawAll {
		t.Fatal("the final progress report did not count every file")
	}
	var left []string
	filepath.WalkDir(storeDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("cancelled build left %q in the store", left)
	}
	if st := store.Stats(); st.Written != 0 {
		t.Fatalf("Stats().Written = %d after a cancelled build", st.Written)
	}
}
