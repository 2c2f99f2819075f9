package builder

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// cachedTree writes a small tree (external and inline files, an xattr)
// and waits until it is old enough to be cached (builds do not record
// files changed in the two seconds before they start).
func cachedTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i := range 20 {
		write(t, filepath.Join(src, "usr/lib", string(rune('a'+i))), big(100+i*300))
	}
	write(t, filepath.Join(src, "etc/small"), "tiny")
	write(t, filepath.Join(src, "etc/empty"), "")
	if err := unix.Lsetxattr(filepath.Join(src, "usr/lib/a"), "user.tag", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	return src
}

// referenced returns every object a commit references: its files, dump
// and image.
func referenced(t *testing.T, r *repo.Repo, res *Result) []fsverity.Digest {
	t.Helper()
	m, _, err := r.ReadCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.LoadTree(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	ds := []fsverity.Digest{res.DumpDigest, res.ImageDigest}
	root.Walk(func(_ string, n *composefs.Node) error {
		if n.HasExternalData() {
			ds = append(ds, *n.Digest)
		}
		return nil
	})
	return ds
}

// TestRebuildRestoresDeletedObjects rebuilds an unchanged tree with the
// file cache: nothing is written; then, with a content object, the dump
// and the image deleted from the store, the cached rebuild stores each of
// them again, and the commits describe the same tree and image.
func TestRebuildRestoresDeletedObjects(t *testing.T) {
	ctx := context.Background()
	src := cachedTree(t)
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	cachePath := filepath.Join(r.Path(), repo.CacheDir, "digests")
	opts := Options{Ref: "os/x86_64/test", Signers: []*sign.Signer{signer(t)}, Timestamp: 1700000000}
	build := func() (*Result, *FileCache) {
		t.Helper()
		c := OpenFileCache(cachePath)
		o := opts
		o.Cache = c
		res, err := Build(ctx, r, Source{Dir: src}, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Save(); err != nil {
			t.Fatal(err)
		}
		return res, c
	}
	first, c := build()
	if c.Vouched() != 0 || c.sealed == nil {
		t.Fatalf("first build: %d objects vouched for, sealed %v", c.Vouched(), c.sealed != nil)
	}
	second, c := build()
	if second.ObjectsWritten != 0 || c.Hits() != 22 { // 20 external, small, empty
		t.Fatalf("unchanged rebuild wrote %d objects, %d cache hits (want 0, 22)", second.ObjectsWritten, c.Hits())
	}
	// The stamps saved by the first build vouch for every object.
	if c.Vouched() != 20 {
		t.Fatalf("unchanged rebuild: the cache vouched for %d objects, want 20", c.Vouched())
	}
	if second.ImageDigest != first.ImageDigest || second.DumpDigest != first.DumpDigest {
		t.Fatal("unchanged rebuild gave another image or dump")
	}
	objs := referenced(t, r, first)
	content := objs[2]
	for _, d := range []fsverity.Digest{first.DumpDigest, first.ImageDigest, content} {
		if err := r.Objects.Remove(d); err != nil {
			t.Fatal(err)
		}
	}
	third, c := build()
	if third.ObjectsWritten != 3 || c.Hits() != 22 {
		t.Fatalf("rebuild after deleting 3 objects wrote %d, with %d cache hits", third.ObjectsWritten, c.Hits())
	}
	// Nothing is vouched for in the directories the deletions changed.
	changed := map[byte]bool{first.DumpDigest[0]: true, first.ImageDigest[0]: true, content[0]: true}
	untouched := 0
	for _, d := range objs[2:] {
		if !changed[d[0]] {
			untouched++
		}
	}
	if c.Vouched() != int64(untouched) {
		t.Fatalf("after deletions the cache vouched for %d objects, want %d", c.Vouched(), untouched)
	}
	if _, c := build(); c.Vouched() != 20 {
		t.Fatalf("the build after the repair: %d objects vouched for, want 20", c.Vouched())
	}
	if third.ImageDigest != first.ImageDigest || third.DumpDigest != first.DumpDigest {
		t.Fatal("rebuild gave another image or dump")
	}
	for _, d := range referenced(t, r, third) {
		if err := r.Objects.Verify(ctx, d); err != nil {
			t.Fatalf("object %s: %v", d, err)
		}
	}
	rep, err := r.Fsck(ctx, repo.FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Leftovers) != 0 {
		t.Fatalf("fsck: %+v", rep)
	}
}

// TestCachedBuildReproducible: a build that trusts the cache (entries and
// the remembered image) commits exactly what a build without a cache in
// another repository commits.
func TestCachedBuildReproducible(t *testing.T) {
	ctx := context.Background()
	src := cachedTree(t)
	opts := Options{Ref: "os/x86_64/test", Signers: []*sign.Signer{signer(t)}, Timestamp: 1700000000, Version: "1"}
	a, err := repo.Init(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	cachePath := filepath.Join(a.Path(), repo.CacheDir, "digests")
	for range 2 {
		c := OpenFileCache(cachePath)
		o := opts
		o.Cache = c
		if _, err := Build(ctx, a, Source{Dir: src}, o); err != nil {
			t.Fatal(err)
		}
		if err := c.Save(); err != nil {
			t.Fatal(err)
		}
	}
	// A third repository built from the cache of the first: its only
	// commit must equal that of a cache-less build.
	c := OpenFileCache(cachePath)
	o := opts
	o.Cache = c
	a2, err := repo.Init(filepath.Join(t.TempDir(), "a2"))
	if err != nil {
		t.Fatal(err)
	}
	cached, err := Build(ctx, a2, Source{Dir: src}, o)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hits() == 0 {
		t.Fatal("the cache was not used")
	}
	b, err := repo.Init(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Build(ctx, b, Source{Dir: src}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cached.Commit != plain.Commit || cached.ImageDigest != plain.ImageDigest || cached.DumpDigest != plain.DumpDigest {
		t.Fatalf("cached build %s (image %s) differs from plain build %s (image %s)", cached.Commit, cached.ImageDigest, plain.Commit, plain.ImageDigest)
	}
}

// TestFileCacheEntries round-trips every kind of entry and the image
// memo through the file, and checks that an unchanged cache is not
// rewritten, that images of another executable are ignored, and that a
// damaged file is an empty cache.
func TestFileCacheEntries(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cache", "digests")
	c := OpenFileCache(p)
	key := func(i uint64) composefs.FileKey {
		return composefs.FileKey{Dev: 1, Ino: i, Size: int64(i) * 10, MtimeSec: 5, CtimeSec: 6, CtimeNsec: int64(i)}
	}
	dig := func(b byte) (d fsverity.Digest) { d[0], d[31] = b, b; return d }
	xs := []composefs.Xattr{{Name: "security.selinux", Value: "system_u:object_r:lib_t:s0"}, {Name: "user.a", Value: "b"}}
	c.AddFile(key(100), composefs.CachedFile{Digest: dig(1), Xattrs: xs}) // external, xattrs
	c.AddFile(key(101), composefs.CachedFile{Digest: dig(2)})             // external, none
	c.AddFile(key(3), composefs.CachedFile{Content: []byte("abc"), Xattrs: xs})
	c.AddFile(key(0), composefs.CachedFile{}) // empty file
	c.Add(key(102), dig(3))                   // digest only: xattrs not known
	img := commit.Image{Algorithm: "sha256", Digest: dig(9), FormatVersion: 1, Size: 8192}
	c.setImage(dig(8), img)
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}

	c = OpenFileCache(p)
	if f, ok := c.LookupFile(key(100)); !ok || f.Digest != dig(1) || len(f.Xattrs) != 2 || f.Xattrs[0] != xs[0] || f.Xattrs[1] != xs[1] {
		t.Fatalf("external with xattrs: %+v %v", f, ok)
	}
	if f, ok := c.LookupFile(key(101)); !ok || f.Digest != dig(2) || f.Xattrs != nil {
		t.Fatalf("external: %+v %v", f, ok)
	}
	if f, ok := c.LookupFile(key(3)); !ok || string(f.Content) != "abc" || len(f.Xattrs) != 2 {
		t.Fatalf("inline: %+v %v", f, ok)
	}
	if f, ok := c.LookupFile(key(0)); !ok || f.Content != nil || f.Xattrs != nil {
		t.Fatalf("empty: %+v %v", f, ok)
	}
	if _, ok := c.LookupFile(key(102)); ok {
		t.Fatal("a digest-only entry answered LookupFile")
	}
	if d, ok := c.Lookup(key(102)); !ok || d != dig(3) {
		t.Fatalf("Lookup of a digest-only entry: %v %v", d, ok)
	}
	if d, ok := c.Lookup(key(100)); !ok || d != dig(1) {
		t.Fatalf("Lookup of a full entry: %v %v", d, ok)
	}
	if _, ok := c.LookupFile(key(7)); ok {
		t.Fatal("unknown key answered")
	}
	if got, ok := c.image(dig(8)); !ok || got != img {
		t.Fatalf("image memo: %+v %v", got, ok)
	}
	if _, ok := c.image(dig(9)); ok {
		t.Fatal("image memo answered for another dump")
	}

	// Every entry used (one unused: key 7 was never there) and no change:
	// Save leaves the file alone.
	c.LookupFile(key(101))
	before, _ := os.Stat(p)
	c.setImage(dig(8), img)
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if before.Sys().(*syscall.Stat_t).Ino != after.Sys().(*syscall.Stat_t).Ino {
		t.Fatal("an unchanged cache was rewritten")
	}
	// Entries not used by a build are dropped by its Save.
	c = OpenFileCache(p)
	c.LookupFile(key(100))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c = OpenFileCache(p)
	if _, ok := c.LookupFile(key(100)); !ok {
		t.Fatal("used entry dropped")
	}
	if _, ok := c.LookupFile(key(101)); ok {
		t.Fatal("unused entry kept")
	}
	if _, ok := c.image(dig(8)); !ok {
		t.Fatal("image memo dropped")
	}

	// An entry added for a key of the file replaces it (a digest-only
	// entry, used, then completed with its xattrs).
	c = OpenFileCache(p)
	c.Lookup(key(100))
	c.AddFile(key(100), composefs.CachedFile{Digest: dig(4), Xattrs: xs[:1]})
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c = OpenFileCache(p)
	if f, ok := c.LookupFile(key(100)); !ok || f.Digest != dig(4) || len(f.Xattrs) != 1 || c.count() != 1 {
		t.Fatalf("replaced entry: %+v %v (%d records)", f, ok, c.count())
	}
	c.setImage(dig(8), img)
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}

	// Images remembered by another executable are ignored.
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, images, _, err := parseCache(b, "exe:another"); err != nil || images != nil {
		t.Fatalf("images of another executable: %v %v", images, err)
	}
	// Damaged files: an empty cache.
	for _, bad := range [][]byte{b[:len(b)-1], b[:len(cacheMagic)+3], append(bytes.Clone(b), 0), []byte("garbage")} {
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		c := OpenFileCache(p)
		if _, ok := c.LookupFile(key(100)); ok || c.rememberedImages() {
			t.Fatalf("damaged cache (%d bytes) answered", len(bad))
		}
	}
}

// TestSealVouchesOnlyForPresentObjects: seal gives a fan-out directory a
// stamp only if every object the saved records name there is in the
// store; the stamps survive Save and open, and a lookup is answered with
// Present only while its directory keeps the stamp.
func TestSealVouchesOnlyForPresentObjects(t *testing.T) {
	ctx := context.Background()
	s, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	present, _, err := s.Insert(ctx, bytes.NewReader([]byte(big(9000))))
	if err != nil {
		t.Fatal(err)
	}
	absent := present
	absent[31] ^= 1 // same directory, no object
	other, _, err := s.Insert(ctx, bytes.NewReader([]byte(big(9001))))
	if err != nil {
		t.Fatal(err)
	}
	if other[0] == present[0] {
		t.Fatal("the two test objects share a fan-out directory: pick other contents")
	}
	p := filepath.Join(t.TempDir(), "digests")
	c := OpenFileCache(p)
	key := func(i uint64) composefs.FileKey { return composefs.FileKey{Dev: 1, Ino: i, Size: 9000} }
	c.AddFile(key(1), composefs.CachedFile{Digest: present})
	c.AddFile(key(2), composefs.CachedFile{Digest: absent})
	c.AddFile(key(3), composefs.CachedFile{Digest: other})
	if err := c.seal(ctx, s); err != nil {
		t.Fatal(err)
	}
	if !c.sealed[present[0]].IsZero() || c.sealed[other[0]].IsZero() {
		t.Fatalf("sealed stamps: %02x %v, %02x %v", present[0], c.sealed[present[0]], other[0], c.sealed[other[0]])
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}

	c = OpenFileCache(p)
	if err := c.useStore(ctx, s); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[uint64]bool{1: false, 2: false, 3: true} {
		f, ok := c.LookupFile(key(k))
		if !ok || f.Present != want {
			t.Fatalf("entry %d: found %v, Present %v, want %v", k, ok, f.Present, want)
		}
	}
	// A removal in the vouched directory ends the trust.
	if err := s.Remove(other); err != nil {
		t.Fatal(err)
	}
	c = OpenFileCache(p)
	if err := c.useStore(ctx, s); err != nil {
		t.Fatal(err)
	}
	if f, _ := c.LookupFile(key(3)); f.Present {
		t.Fatal("an object removed after the seal is vouched for")
	}
	if c.Vouched() != 0 {
		t.Fatalf("vouched %d", c.Vouched())
	}
}
