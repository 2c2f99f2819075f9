package composefs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// memCache is an EntryCache in memory that counts its use.
type memCache struct {
	mu                    sync.Mutex
	files                 map[FileKey]CachedFile
	digests               map[FileKey]fsverity.Digest
	fileHits, digestHits  int
	filesAdded, dgstAdded int
}

func newMemCache() *memCache {
	return &memCache{files: map[FileKey]CachedFile{}, digests: map[FileKey]fsverity.Digest{}}
}

func (c *memCache) Lookup(k FileKey) (fsverity.Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.digests[k]
	if ok {
		c.digestHits++
	}
	return d, ok
}

func (c *memCache) Add(k FileKey, d fsverity.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.digests[k] = d
	c.dgstAdded++
}

func (c *memCache) LookupFile(k FileKey) (CachedFile, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.files[k]
	if ok {
		c.fileHits++
	}
	return f, ok
}

func (c *memCache) AddFile(k FileKey, f CachedFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.Content = slices.Clone(f.Content)
	f.Xattrs = slices.Clone(f.Xattrs)
	c.files[k] = f
	c.filesAdded++
}

func (c *memCache) counts() (fileHits, filesAdded, digestHits, digestsAdded int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fileHits, filesAdded, digestHits, digestsAdded = c.fileHits, c.filesAdded, c.digestHits, c.dgstAdded
	c.fileHits, c.filesAdded, c.digestHits, c.dgstAdded = 0, 0, 0, 0
	return
}

// TestBuildEntryCache builds a tree four times with an entry cache: the
// second build reads nothing but lstat and gives the same tree; an xattr
// change, a content change behind a restored mtime, and an object deleted
// from the store are each noticed.
func TestBuildEntryCache(t *testing.T) {
	// Files changed up to the start of a build may be cached (the real
	// window is two seconds); the pauses below keep each change in
	// another clock tick than the state cached before it.
	old := racyWindow
	racyWindow = 0
	defer func() { racyWindow = old }()
	pause := func() { time.Sleep(20 * time.Millisecond) }
	ctx := context.Background()
	dir := t.TempDir()
	regular, _ := makeTree(t, dir, 300)
	tagged := filepath.Join(dir, "tagged")
	writeFile(t, tagged, randBytes(99, 5000))
	if err := unix.Lsetxattr(tagged, "user.label", []byte("one"), 0); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small")
	writeFile(t, small, []byte("small content"))
	regular += 2
	store, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	cache := newMemCache()
	build := func() *Node {
		t.Helper()
		pause()
		root, err := BuildFromDir(ctx, dir, BuildOptions{Store: store, Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		return root
	}
	first := build()
	if hits, added, dh, da := cache.counts(); hits != 0 || added != regular || dh+da != 0 {
		t.Fatalf("first build: %d hits, %d files added (want %d), digest cache used %d+%d times", hits, added, regular, dh, da)
	}
	second := build()
	if hits, added, _, _ := cache.counts(); hits != regular || added != 0 {
		t.Fatalf("second build: %d hits (want %d), %d added", hits, regular, added)
	}
	if describeTree(second) != describeTree(first) {
		t.Fatal("cached build differs from the first")
	}
	if x, _ := mustLookup(t, second, "tagged").GetXattr("user.label"); x != "one" {
		t.Fatalf("cached xattr %q", x)
	}

	// Changing an xattr changes the ctime: the file is read again.
	pause()
	if err := unix.Lsetxattr(tagged, "user.label", []byte("two"), 0); err != nil {
		t.Fatal(err)
	}
	// New content of the same size with the old mtime: the ctime moves.
	st := lstat(t, small)
	writeFile(t, small, []byte("other content"))
	mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if err := os.Chtimes(small, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	// An object deleted from the store comes back.
	victim := *mustLookup(t, first, "tagged").Digest
	if err := store.Remove(victim); err != nil {
		t.Fatal(err)
	}
	third := build()
	if hits, added, _, _ := cache.counts(); hits != regular-2 || added != 2 {
		t.Fatalf("third build: %d hits (want %d), %d added (want 2)", hits, regular-2, added)
	}
	if x, _ := mustLookup(t, third, "tagged").GetXattr("user.label"); x != "two" {
		t.Fatalf("xattr after change: %q", x)
	}
	if c := string(mustLookup(t, third, "small").Content); c != "other content" {
		t.Fatalf("content after change: %q", c)
	}
	if err := store.Verify(ctx, victim); err != nil {
		t.Fatalf("deleted object not re-created: %v", err)
	}
	// Deleted again, with the file unchanged this time: the cache knows
	// the file, the store does not have its object, so it is stored.
	if err := store.Remove(victim); err != nil {
		t.Fatal(err)
	}
	fourth := build()
	if hits, added, _, _ := cache.counts(); hits != regular || added != 1 {
		t.Fatalf("fourth build: %d hits (want %d), %d added (want 1: the file hashed again)", hits, regular, added)
	}
	if describeTree(fourth) != describeTree(third) {
		t.Fatal("fourth build differs")
	}
	if err := store.Verify(ctx, victim); err != nil {
		t.Fatalf("deleted object not re-created from a cached file: %v", err)
	}

	// With only user xattrs read, the entry cache is not consulted (it
	// records all xattrs); the digest cache is.
	if _, err := BuildFromDir(ctx, dir, BuildOptions{Store: store, Cache: cache, UserXattrs: true}); err != nil {
		t.Fatal(err)
	}
	if hits, added, dh, da := cache.counts(); hits+added != 0 || dh+da == 0 {
		t.Fatalf("user-xattrs build: entry cache used %d+%d times, digest cache %d+%d", hits, added, dh, da)
	}
}

// TestBuildCallerBatch: with BuildOptions.Batch the objects are published
// only when the caller flushes, and dropped when it aborts.
func TestBuildCallerBatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	makeTree(t, dir, 60)
	store, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		if err := store.Walk(ctx, func(fsverity.Digest) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	b := store.Batch()
	root, err := BuildFromDir(ctx, dir, BuildOptions{Batch: b})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 || b.Pending() == 0 {
		t.Fatalf("%d objects published, %d pending before the caller's Flush", n, b.Pending())
	}
	b.Abort()
	if n := count(); n != 0 {
		t.Fatalf("%d objects published after Abort", n)
	}
	b = store.Batch()
	if _, err := BuildFromDir(ctx, dir, BuildOptions{Batch: b}); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := root.Walk(func(_ string, n *Node) error {
		if n.HasExternalData() {
			return store.Verify(ctx, *n.Digest)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	other, err := objstore.Open(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := BuildFromDir(ctx, dir, BuildOptions{Store: other, Batch: store.Batch()}); !errors.Is(err, ErrBuildOptions) {
		t.Fatalf("Batch of another store: %v", err)
	}
}

// TestBuildCacheRacyWindow: files changed just before the build are not
// recorded (a second change within the same timestamp tick could keep
// their key), files changed earlier are.
func TestBuildCacheRacyWindow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "old"), randBytes(1, 3000))
	writeFile(t, filepath.Join(dir, "new"), randBytes(2, 3000))
	writeFile(t, filepath.Join(dir, "newsmall"), []byte("x"))
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "old"), &st); err != nil {
		t.Fatal(err)
	}
	// The window is relative to ctime, which cannot be set: move the
	// window instead, to just after "old" was written.
	time.Sleep(50 * time.Millisecond)
	writeFile(t, filepath.Join(dir, "new"), randBytes(3, 3000))
	writeFile(t, filepath.Join(dir, "newsmall"), []byte("y"))
	old := racyWindow
	racyWindow = time.Since(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) - 25*time.Millisecond
	defer func() { racyWindow = old }()
	cache := newMemCache()
	if _, err := BuildFromDir(ctx, dir, BuildOptions{Cache: cache}); err != nil {
		t.Fatal(err)
	}
	if _, added, _, _ := cache.counts(); added != 1 {
		t.Fatalf("%d files recorded, want 1 (only the one changed before the window)", added)
	}
	for k := range cache.files {
		if k.Ino != st.Ino {
			t.Fatalf("recorded inode %d, want %d (old)", k.Ino, st.Ino)
		}
	}
}
