package composefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// TestLaneHasher builds a tree of files at every interesting size (around
// leaf and lane-chunk boundaries, single-leaf files, large files next to
// small ones, a sparse file) with the lane hasher and with the one-file
// hasher, each into a new store: the trees are equal, every digest is the
// file's own, and every stored object verifies.
func TestLaneHasher(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bs := fsverity.BlockSize
	sizes := []int{65, 100, bs - 1, bs, bs + 1, 2 * bs, 7*bs + 3, laneChunk - 1, laneChunk, laneChunk + 1,
		3*laneChunk + 5, 129 * bs, 1<<20 + 3, 5 << 20}
	for i := range 150 { // many small files: several per lane step
		sizes = append(sizes, 65+(i*7919)%(3*bs))
	}
	for i, n := range sizes {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("d%d/f%03d", i%5, i)), randBytes(uint64(i), n))
	}
	writeFile(t, filepath.Join(dir, "dup"), randBytes(3, sizes[3])) // same content as f003
	sparse := filepath.Join(dir, "sparse")
	writeFile(t, sparse, []byte("start"))
	if err := os.Truncate(sparse, 3<<20); err != nil {
		t.Fatal(err)
	}

	build := func(kind string) (*Node, *objstore.Store) {
		t.Helper()
		old := hasherKind
		hasherKind = kind
		defer func() { hasherKind = old }()
		store, err := objstore.Open(filepath.Join(t.TempDir(), "objects"))
		if err != nil {
			t.Fatal(err)
		}
		root, err := BuildFromDir(ctx, dir, BuildOptions{Store: store, Threads: 2})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return root, store
	}
	lanes, store := build("lanes")
	single, _ := build("single")
	if describeTree(lanes) != describeTree(single) {
		t.Fatal("the lane hasher and the one-file hasher give different trees")
	}
	files := 0
	err := lanes.Walk(func(p string, n *Node) error {
		if !n.HasExternalData() {
			return nil
		}
		files++
		want, _, err := fsverity.DigestFile(ctx, filepath.Join(dir, p))
		if err != nil {
			return err
		}
		if *n.Digest != want {
			return fmt.Errorf("%s: digest %s, want %s", p, n.Digest, want)
		}
		return store.Verify(ctx, want)
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != len(sizes)+2 {
		t.Fatalf("%d files with objects, want %d", files, len(sizes)+2)
	}
}

// A file that shrinks between the walk and the lane's read is an
// ErrSourceChanged naming it, and nothing is recorded.
func TestLaneHasherShrunkFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	writeFile(t, p, randBytes(1, 3*laneChunk))
	st := lstat(t, p)
	if err := os.Truncate(p, laneChunk+10); err != nil {
		t.Fatal(err)
	}
	b := newBuilder(ctx, dir, BuildOptions{})
	defer b.cancel()
	l := lane{buf: make([]byte, laneChunk), h: fsverity.NewHasher(fsverity.SHA256)}
	node := &Node{}
	if err := b.startLane(&l, fileTask{node: node, rel: "f", key: keyOf(&st)}); err != nil {
		t.Fatal(err)
	}
	defer b.stopLane(&l)
	var err error
	for range 3 {
		if err = b.nextLeaf(&l); err != nil {
			break
		}
		l.pos = l.n // as if every leaf of the chunk had been hashed
	}
	if !errors.Is(err, ErrSourceChanged) || !strings.Contains(err.Error(), p) {
		t.Fatalf("shrunk file: %v, want ErrSourceChanged naming %s", err, p)
	}
	if node.Digest != nil {
		t.Error("digest recorded for a changed file")
	}
}
