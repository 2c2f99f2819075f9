package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// content returns n pseudo-random bytes determined by seed.
func content(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// srcFile writes data to a new file and returns it opened read-only.
func srcFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listStore returns every file below the store dir, relative, sorted.
func listStore(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(s.Dir(), p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInsertFileDedupVerify(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := os.Stat(s.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open created the store directory (stat err %v); it must appear on first insert", err)
	}
	var want []string
	for i, n := range []int{1, 65, 4095, 4096, 4097, 1<<20 + 1} {
		data := content(uint64(i), n)
		d := fsverity.DigestBytes(data)
		src := srcFile(t, data)
		written, err := s.InsertFile(ctx, src, int64(n), d)
		if err != nil || !written {
			t.Fatalf("size %d: InsertFile = %v, %v; want true, nil", n, written, err)
		}
		got, err := os.ReadFile(s.Path(d))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: object content differs (err %v)", n, err)
		}
		if s.Path(d) != filepath.Join(s.Dir(), d.String()[:2], d.String()[2:]) {
			t.Fatalf("Path(%s) = %s", d, s.Path(d))
		}
		written, err = s.InsertFile(ctx, src, int64(n), d)
		if err != nil || written {
			t.Fatalf("size %d: second InsertFile = %v, %v; want false, nil", n, written, err)
		}
		if ok, err := s.Has(ctx, d); !ok || err != nil {
			t.Fatalf("Has = %v, %v", ok, err)
		}
		if err := s.Verify(ctx, d); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		want = append(want, d.ObjectPath())
	}
	if got := listStore(t, s); strings.Join(got, "\n") != strings.Join(sorted(want), "\n") {
		t.Fatalf("store holds %q, want %q", got, sorted(want))
	}
	var walked []string
	if err := s.Walk(ctx, func(d fsverity.Digest) error { walked = append(walked, d.ObjectPath()); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(walked, "\n") != strings.Join(sorted(want), "\n") {
		t.Fatalf("Walk gave %q, want %q", walked, sorted(want))
	}
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestMissingObject(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d := fsverity.DigestBytes([]byte("nothing"))
	if ok, err := s.Has(ctx, d); ok || err != nil {
		t.Fatalf("Has on empty store = %v, %v", ok, err)
	}
	if err := s.Verify(ctx, d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Verify of missing object = %v, want fs.ErrNotExist", err)
	}
	if err := s.Remove(d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove of missing object = %v, want fs.ErrNotExist", err)
	}
	n := 0
	if err := s.Walk(ctx, func(fsverity.Digest) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("Walk of missing store: %d objects, %v", n, err)
	}
}

func TestOpenRejectsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil {
		t.Fatal("Open of a regular file succeeded")
	}
	if _, err := Open(""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

func TestCorruptExistingObjectDetected(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(7, 10000)
	d := fsverity.DigestBytes(data)
	if _, err := s.InsertFile(ctx, srcFile(t, data), int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	bad[5000] ^= 1
	if err := os.WriteFile(s.Path(d), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		var ce *CorruptObjectError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: err = %v, want *CorruptObjectError", what, err)
		}
		if ce.Digest != d || ce.Found != fsverity.DigestBytes(bad) || ce.Path != s.Path(d) {
			t.Fatalf("%s: error has Digest %s Found %s Path %s; want %s %s %s", what, ce.Digest, ce.Found, ce.Path, d, fsverity.DigestBytes(bad), s.Path(d))
		}
		if !strings.Contains(err.Error(), s.Path(d)) {
			t.Fatalf("%s: error %q does not name the object", what, err)
		}
	}
	_, err := s.InsertFile(ctx, srcFile(t, data), int64(len(data)), d)
	check("InsertFile", err)
	_, _, err = s.Insert(ctx, bytes.NewReader(data))
	check("Insert", err)
	check("Verify", s.Verify(ctx, d))
	// The corrupt object was neither replaced nor removed.
	if got, _ := os.ReadFile(s.Path(d)); !bytes.Equal(got, bad) {
		t.Fatal("corrupt object was silently replaced")
	}

	// A symlink in place of an object is corrupt too, never followed.
	d2 := fsverity.DigestBytes([]byte("link target"))
	if err := os.MkdirAll(filepath.Dir(s.Path(d2)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(s.Path(d), s.Path(d2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Has(ctx, d2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Has on a symlink: %v, want ErrCorrupt", err)
	}
	if _, err := s.InsertFile(ctx, srcFile(t, []byte("link target")), 11, d2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("InsertFile over a symlink: %v, want ErrCorrupt", err)
	}
}

func TestUserCopyRefusesWrongDigest(t *testing.T) {
	forceUserCopy = true
	defer func() { forceUserCopy = false }()
	ctx := context.Background()
	s := newStore(t)
	data := content(3, 9000)
	wrong := fsverity.DigestBytes([]byte("something else"))
	_, err := s.InsertFile(ctx, srcFile(t, data), int64(len(data)), wrong)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("InsertFile with a wrong digest: %v, want ErrDigestMismatch", err)
	}
	if got := listStore(t, s); len(got) != 0 {
		t.Fatalf("store holds %q after a refused insert", got)
	}
	// And the user-space path works for a right digest.
	d := fsverity.DigestBytes(data)
	if w, err := s.InsertFile(ctx, srcFile(t, data), int64(len(data)), d); err != nil || !w {
		t.Fatalf("InsertFile (user copy) = %v, %v", w, err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
}

func TestInsertFileShortSource(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(4, 100)
	if _, err := s.InsertFile(ctx, srcFile(t, data), 200, fsverity.DigestBytes(data)); err == nil {
		t.Fatal("InsertFile with size beyond the source succeeded")
	}
	// A larger source is cut to size (the digest covers size bytes).
	d := fsverity.DigestBytes(data[:70])
	if w, err := s.InsertFile(ctx, srcFile(t, data), 70, d); err != nil || !w {
		t.Fatalf("InsertFile of a prefix = %v, %v", w, err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := listStore(t, s); len(got) != 1 {
		t.Fatalf("store holds %q", got)
	}
}

func TestInsertStream(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for i, n := range []int{0, 1, 4096, 100000} {
		data := content(uint64(100+i), n)
		d, size, err := s.Insert(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if d != fsverity.DigestBytes(data) || size != int64(n) {
			t.Fatalf("Insert: %s %d, want %s %d", d, size, fsverity.DigestBytes(data), n)
		}
		got, err := os.ReadFile(s.Path(d))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("object content differs (%v)", err)
		}
		d2, _, err := s.Insert(ctx, bytes.NewReader(data))
		if err != nil || d2 != d {
			t.Fatalf("second Insert: %s %v", d2, err)
		}
	}
	if got := listStore(t, s); len(got) != 4 {
		t.Fatalf("store holds %q, want 4 objects and no temporary files", got)
	}
}

func TestObjectModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	ctx := context.Background()
	s := newStore(t)
	data := content(9, 5000)
	d := fsverity.DigestBytes(data)
	if _, err := s.InsertFile(ctx, srcFile(t, data), int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	d2, _, err := s.Insert(ctx, bytes.NewReader(content(10, 300)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{
		{s.Dir(), fs.ModeDir | 0o755},
		{filepath.Dir(s.Path(d)), fs.ModeDir | 0o755},
		{s.Path(d), 0o644},
		{s.Path(d2), 0o644},
	} {
		st, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode(), c.mode)
		}
	}
}

func TestSparseSourceStaysSparse(t *testing.T) {
	ctx := context.Background()
	for _, user := range []bool{false, true} {
		t.Run(fmt.Sprintf("usercopy=%v", user), func(t *testing.T) {
			forceUserCopy = user
			defer func() { forceUserCopy = false }()
			s := newStore(t)
			p := filepath.Join(t.TempDir(), "sparse")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			const size = 64<<20 + 1
			if _, err := f.WriteAt([]byte("middle"), 32<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("e"), size-1); err != nil {
				t.Fatal(err)
			}
			f.Close()
			d, n, err := fsverity.DigestFile(ctx, p)
			if err != nil || n != size {
				t.Fatal(err, n)
			}
			src, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if _, err := s.InsertFile(ctx, src, size, d); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(s.Path(d))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != size {
				t.Fatalf("object size %d", st.Size())
			}
			if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > 1<<20 {
				t.Fatalf("object of a sparse file uses %d bytes on disk", used)
			}
			if err := s.Verify(ctx, d); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConcurrentInsertsOfOneObject(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(11, 300000)
	d := fsverity.DigestBytes(data)
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wrote atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				f, err := os.Open(p)
				if err != nil {
					errs <- err
					return
				}
				defer f.Close()
				w, err := s.InsertFile(ctx, f, int64(len(data)), d)
				if err != nil {
					errs <- err
					return
				}
				if w {
					wrote.Add(1)
				}
				return
			}
			got, _, err := s.Insert(ctx, bytes.NewReader(data))
			if err != nil {
				errs <- err
			} else if got != d {
				errs <- fmt.Errorf("Insert digest %s", got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := listStore(t, s); len(got) != 1 || got[0] != d.ObjectPath() {
		t.Fatalf("store holds %q, want just %s", got, d.ObjectPath())
	}
	if wrote.Load() > 1 {
		t.Fatalf("%d InsertFile calls report writing the object", wrote.Load())
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// TestNoPartialObjectsVisible watches the fan-out directories while
// objects are being inserted: every name that appears must already be a
// complete, correct object, and no temporary file is ever among them.
func TestNoPartialObjectsVisible(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	contents := map[fsverity.Digest][]byte{}
	var srcs []string
	dir := t.TempDir()
	for i := range 40 {
		data := content(uint64(1000+i), 200000+i*1000)
		d := fsverity.DigestBytes(data)
		contents[d] = data
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, p)
	}
	stop := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		defer close(watchErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			subs, _ := os.ReadDir(s.Dir())
			for _, sub := range subs {
				if !sub.IsDir() {
					continue
				}
				names, _ := os.ReadDir(filepath.Join(s.Dir(), sub.Name()))
				for _, e := range names {
					if strings.HasPrefix(e.Name(), tempPrefix) {
						continue // staged copy, not under an object name
					}
					d, err := fsverity.ParseDigest(sub.Name() + e.Name())
					if err != nil {
						watchErr <- fmt.Errorf("non-object %s/%s visible in a fan-out directory", sub.Name(), e.Name())
						return
					}
					got, err := os.ReadFile(filepath.Join(s.Dir(), sub.Name(), e.Name()))
					if err != nil || !bytes.Equal(got, contents[d]) {
						watchErr <- fmt.Errorf("object %s visible before it was complete (%d bytes, err %v)", d, len(got), err)
						return
					}
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i, p := range srcs {
		wg.Go(func() {
			data := contents[fsverity.DigestBytes(mustRead(t, p))]
			if i%2 == 0 {
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				if _, err := s.InsertFile(ctx, f, int64(len(data)), fsverity.DigestBytes(data)); err != nil {
					t.Error(err)
				}
				return
			}
			if _, _, err := s.Insert(ctx, bytes.NewReader(data)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	var walked int
	err := s.Walk(ctx, func(d fsverity.Digest) error {
		walked++
		if _, ok := contents[d]; !ok {
			return fmt.Errorf("unexpected object %s", d)
		}
		return s.Verify(ctx, d)
	})
	if err != nil || walked != len(contents) {
		t.Fatalf("Walk: %d objects, %v; want %d", walked, err, len(contents))
	}
	if got := listStore(t, s); len(got) != len(contents) {
		t.Fatalf("store holds %d files (temporary files left?), want %d", len(got), len(contents))
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Error(err)
	}
	return b
}

func TestWalkSkipsForeignEntries(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d, _, err := s.Insert(ctx, bytes.NewReader(content(5, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	hex := d.String()
	for _, p := range []string{
		".tmp-12345",                             // a temporary file left by a crash
		hex[:2] + "/short",                       // wrong length
		hex[:2] + "/" + strings.ToUpper(hex[2:]), // not lower case
		"zz/" + hex[2:],                          // not a fan-out dir
		"README",
	} {
		full := filepath.Join(s.Dir(), p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var got []fsverity.Digest
	if err := s.Walk(ctx, func(x fsverity.Digest) error { got = append(got, x); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != d {
		t.Fatalf("Walk = %v, want [%s]", got, d)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Has(ctx, d); ok || err != nil {
		t.Fatalf("Has after Remove = %v, %v", ok, err)
	}
	// Inserting again after a prune works, also when the fan-out
	// directory itself was pruned behind the store's back.
	if err := os.RemoveAll(filepath.Join(s.Dir(), hex[:2])); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Insert(ctx, bytes.NewReader(content(5, 1000))); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// TestDigestNamesMatchFsverityTool checks object names against the
// fsverity-utils implementation.
func TestDigestNamesMatchFsverityTool(t *testing.T) {
	tool := testutil.RequireTool(t, "fsverity")
	ctx := context.Background()
	s := newStore(t)
	for i, n := range []int{65, 4096, 4097, 1 << 20, 1<<20 + 1} {
		data := content(uint64(200+i), n)
		src := srcFile(t, data)
		d, _, err := s.Insert(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{src.Name(), s.Path(d)} {
			out, err := exec.Command(tool, "digest", "--compact", p).Output()
			if err != nil {
				t.Fatalf("fsverity digest %s: %v", p, err)
			}
			if got := strings.TrimSpace(string(out)); got != d.String() {
				t.Fatalf("size %d: fsverity digest %s = %s, object name %s", n, p, got, d)
			}
		}
	}
}

// TestMultiProcessInserts runs several processes inserting the same
// objects into one store at once: every object ends up complete and
// verified, once, with no temporary files left.
func TestMultiProcessInserts(t *testing.T) {
	const objects = 30
	if dir := os.Getenv("CFS_OBJSTORE_HELPER"); dir != "" {
		ctx := context.Background()
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		srcDir := t.TempDir()
		for i := range objects {
			data := content(uint64(5000+i), 50000+i)
			if i%2 == 0 {
				if _, _, err := s.Insert(ctx, bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				continue
			}
			p := filepath.Join(srcDir, fmt.Sprint(i))
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.InsertFile(ctx, f, int64(len(data)), fsverity.DigestBytes(data))
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	s := newStore(t)
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMultiProcessInserts$")
		cmd.Env = append(os.Environ(), "CFS_OBJSTORE_HELPER="+s.Dir())
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
	}
	want := map[string]bool{}
	for i := range objects {
		want[fsverity.DigestBytes(content(uint64(5000+i), 50000+i)).ObjectPath()] = true
	}
	got := listStore(t, s)
	if len(got) != objects {
		t.Fatalf("store holds %d files, want %d objects: %q", len(got), objects, got)
	}
	for _, p := range got {
		if !want[p] {
			t.Fatalf("unexpected file %s", p)
		}
		d, err := fsverity.ParseObjectPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Verify(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPublishLosesRace drives the no-clobber rename directly: when the
// object appeared after the existence check, the finished temporary file
// is dropped, the existing object verified and kept.
func TestPublishLosesRace(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(77, 20000)
	d, _, err := s.Insert(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	stage := func(payload []byte) string {
		tmp, err := s.createTemp()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.Write(payload); err != nil {
			t.Fatal(err)
		}
		name := tmp.Name()
		if err := s.finish(tmp, d, true); err != nil {
			t.Fatal(err)
		}
		return name
	}
	tmp := stage(data)
	written, err := s.publish(ctx, tmp, d, true)
	if err != nil || written {
		t.Fatalf("publish over an identical object = %v, %v; want false, nil", written, err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	// The existing object is corrupt: publishing reports it and does
	// not replace it.
	bad := append([]byte(nil), data...)
	bad[0] ^= 0xff
	if err := os.WriteFile(s.Path(d), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp = stage(data)
	if _, err := s.publish(ctx, tmp, d, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("publish over a corrupt object: %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(s.Path(d)); !bytes.Equal(got, bad) {
		t.Fatal("corrupt object replaced behind the caller's back")
	}
	if got := listStore(t, s); len(got) != 1 {
		t.Fatalf("store holds %q", got)
	}
}

// A reader failing with its own io.ErrUnexpectedEOF (a truncated stream)
// must not be stored as a complete object.
func TestInsertTruncatedStream(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	r := io.MultiReader(strings.NewReader(strings.Repeat("x", 10000)), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, _, err := s.Insert(context.Background(), r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Insert of a truncated stream: %v, want io.ErrUnexpectedEOF", err)
	}
	n := 0
	if err := s.Walk(context.Background(), func(fsverity.Digest) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d objects stored from a truncated stream", n)
	}
}
