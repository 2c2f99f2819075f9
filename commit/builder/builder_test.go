package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
)

func signer(t *testing.T) *sign.Signer {
	t.Helper()
	priv, _, err := sign.Keygen(sign.KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.ParseSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, p string, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func big(n int) string { return string(make([]byte, n)) + "x" }

func TestBuildKernelClampAndRollbackIndex(t *testing.T) {
	ctx := context.Background()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	write(t, filepath.Join(src, "usr/lib/modules/6.12.1/vmlinuz"), big(5000))
	write(t, filepath.Join(src, "usr/lib/modules/6.12.1/initramfs.img"), "tiny initrd") // inline: digest computed from content
	write(t, filepath.Join(src, "usr/bin/tool"), big(300))
	future := time.Unix(2000000000, 5)
	if err := os.Chtimes(filepath.Join(src, "usr/bin/tool"), future, future); err != nil {
		t.Fatal(err)
	}
	s := signer(t)
	opts := Options{Ref: "os/x86_64/test", Signers: []*sign.Signer{s}, Timestamp: 1700000000, Version: "1"}
	res, err := Build(ctx, r, Source{Dir: src}, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := r.ReadCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kernel == nil || m.Kernel.Version != "6.12.1" || m.Kernel.Initramfs == nil || m.Kernel.Vmlinuz.Size != 5001 {
		t.Fatalf("kernel: %+v", m.Kernel)
	}
	if m.Timestamp != 1700000000 || m.RollbackIndex != 0 || m.Parent != nil || m.Ref != opts.Ref {
		t.Fatalf("metadata: %+v", m)
	}
	root, err := r.LoadTree(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	tool := root.Lookup("usr").Lookup("bin").Lookup("tool")
	if tool.Mtime != (composefs.Timespec{Sec: 1700000000}) {
		t.Fatalf("mtime not clamped to SOURCE_DATE_EPOCH: %+v", tool.Mtime)
	}
	if m.Objects.Count != 2 { // vmlinuz, tool (initramfs is inline)
		t.Fatalf("objects: %+v", m.Objects)
	}

	// The second commit keeps the parent's index by default, refuses a
	// lower one, and accepts a higher one.
	res2, err := Build(ctx, r, Source{Dir: src}, opts)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, _ := r.ReadCommit(res2.Commit)
	if m2.Parent == nil || *m2.Parent != res.Commit || m2.RollbackIndex != 0 {
		t.Fatalf("second commit: parent %v index %d", m2.Parent, m2.RollbackIndex)
	}
	five := uint64(5)
	opts.RollbackIndex = &five
	if _, err := Build(ctx, r, Source{Dir: src}, opts); err != nil {
		t.Fatal(err)
	}
	two := uint64(2)
	opts.RollbackIndex = &two
	before, _ := r.ReadRef(opts.Ref)
	if _, err := Build(ctx, r, Source{Dir: src}, opts); !errors.Is(err, ErrRollbackIndex) {
		t.Fatalf("lower rollback index: %v", err)
	}
	if after, _ := r.ReadRef(opts.Ref); after != before {
		t.Fatal("ref moved by a refused build")
	}
}

func TestBuildRefusesSeveralKernels(t *testing.T) {
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	write(t, filepath.Join(src, "usr/lib/modules/6.1/vmlinuz"), big(100))
	write(t, filepath.Join(src, "usr/lib/modules/6.2/vmlinuz"), big(200))
	_, err = Build(context.Background(), r, Source{Dir: src}, Options{Ref: "x", Signers: []*sign.Signer{signer(t)}})
	if !errors.Is(err, ErrKernel) {
		t.Fatalf("two kernels: %v", err)
	}
	if _, err := r.ReadRef("x"); !errors.Is(err, repo.ErrRefNotFound) {
		t.Fatalf("ref written: %v", err)
	}
}

func TestFileCacheRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cache", "digests")
	c := OpenFileCache(p)
	k := composefs.FileKey{Dev: 1, Ino: 2, Size: 3, MtimeSec: 4, MtimeNsec: 5, CtimeSec: 6, CtimeNsec: 7}
	if _, ok := c.Lookup(k); ok {
		t.Fatal("empty cache hit")
	}
	var d commit.ID
	d[0] = 9
	c.Add(k, [32]byte(d))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c2 := OpenFileCache(p)
	got, ok := c2.Lookup(k)
	if !ok || got[0] != 9 || c2.Hits() != 1 {
		t.Fatalf("reloaded: %v %v", got, ok)
	}
	// A damaged file is an empty cache, not an error.
	os.WriteFile(p, []byte("garbage"), 0o644)
	if _, ok := OpenFileCache(p).Lookup(k); ok {
		t.Fatal("damaged cache answered")
	}
}
