package objstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// batchInputs inserts n distinct files into b and returns their digests.
func batchInputs(t *testing.T, b *Batch, n int) []fsverity.Digest {
	t.Helper()
	ctx := context.Background()
	ds := make([]fsverity.Digest, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		data := content(uint64(i)+100, 1000+i*4099)
		ds[i] = fsverity.DigestBytes(data)
		src := srcFile(t, data)
		wg.Go(func() {
			written, err := b.InsertFile(ctx, src, int64(len(data)), ds[i])
			if err == nil && !written {
				err = errors.New("not queued")
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("InsertFile %d: %v", i, err)
		}
	}
	return ds
}

func countTemps(names []string) int {
	n := 0
	for _, name := range names {
		if strings.HasPrefix(filepath.Base(name), tempPrefix) {
			n++
		}
	}
	return n
}

func TestBatchPublishesOnFlush(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	b := s.Batch()
	ds := batchInputs(t, b, 8)
	// Queued again: not a second copy.
	data := content(100, 1000)
	if written, err := b.InsertFile(ctx, srcFile(t, data), int64(len(data)), ds[0]); err != nil || written {
		t.Fatalf("duplicate InsertFile = %v, %v; want false, nil", written, err)
	}
	if b.Pending() != len(ds) {
		t.Fatalf("Pending = %d, want %d", b.Pending(), len(ds))
	}
	for _, d := range ds {
		if has, err := s.Has(ctx, d); err != nil || has {
			t.Fatalf("object %s visible before Flush (%v, %v)", d, has, err)
		}
	}
	if got := countTemps(listStore(t, s)); got != len(ds) {
		t.Fatalf("%d temporary files before Flush, want %d", got, len(ds))
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := s.Verify(ctx, d); err != nil {
			t.Fatalf("after Flush: %v", err)
		}
	}
	names := listStore(t, s)
	if countTemps(names) != 0 || len(names) != len(ds) {
		t.Fatalf("store after Flush holds %q, want exactly %d objects", names, len(ds))
	}
	if st := s.Stats(); st.Written != int64(len(ds)) {
		t.Fatalf("Stats().Written = %d, want %d", st.Written, len(ds))
	}
	if _, err := b.InsertFile(ctx, srcFile(t, data), int64(len(data)), ds[0]); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("InsertFile after Flush: %v, want ErrBatchDone", err)
	}
	// A second batch finds the objects present and verified: nothing queued.
	b2 := s.Batch()
	if written, err := b2.InsertFile(ctx, srcFile(t, data), int64(len(data)), ds[0]); err != nil || written {
		t.Fatalf("InsertFile of a present object = %v, %v; want false, nil", written, err)
	}
	if err := b2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBatchAbortAndDiscard(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	b := s.Batch()
	ds := batchInputs(t, b, 4)
	if !b.Discard(ds[0]) || b.Discard(ds[0]) {
		t.Fatal("Discard should report the queued object once")
	}
	if got := countTemps(listStore(t, s)); got != len(ds)-1 {
		t.Fatalf("%d temporary files after Discard, want %d", got, len(ds)-1)
	}
	b.Abort()
	if names := listStore(t, s); len(names) != 0 {
		t.Fatalf("store after Abort holds %q", names)
	}
	if err := b.Flush(ctx); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Flush after Abort: %v, want ErrBatchDone", err)
	}
}

func TestBatchFlushCancelled(t *testing.T) {
	s := newStore(t)
	b := s.Batch()
	ds := batchInputs(t, b, 4)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a cancelled context: %v", err)
	}
	if names := listStore(t, s); len(names) != 0 {
		t.Fatalf("store after a cancelled Flush holds %q", names)
	}
	for _, d := range ds {
		if has, _ := s.Has(context.Background(), d); has {
			t.Fatalf("object %s published by a cancelled Flush", d)
		}
	}
}

// digestIn returns a digest whose object would live in the same fan-out
// directory as d, distinct from it.
func digestIn(d fsverity.Digest, i byte) fsverity.Digest {
	o := d
	o[31] ^= 0x80 | i
	o[30] = i
	return o
}

// TestBatchHasFromListing queries one fan-out directory often enough for
// the batch to list it: the answers stay right for present and absent
// objects, temporary files never count, a non-regular entry named like an
// object is an error, and objects queued in the batch count as present.
func TestBatchHasFromListing(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(21, 9000)
	d, _, err := s.Insert(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	fan := filepath.Dir(s.Path(d))
	// A temporary file, even one named like the object it would become
	// after its prefix, and a directory in an object's place.
	if err := os.WriteFile(filepath.Join(fan, tempPrefix+d.String()[2:]), data[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	odd := digestIn(d, 1)
	if err := os.Mkdir(s.Path(odd), 0o755); err != nil {
		t.Fatal(err)
	}
	b := s.Batch()
	defer b.Abort()
	queued := srcFile(t, content(22, 5000))
	qd := fsverity.DigestBytes(content(22, 5000))
	if w, err := b.InsertFile(ctx, queued, 5000, qd); err != nil || !w {
		t.Fatalf("InsertFile = %v, %v", w, err)
	}
	for round := range 200 {
		if has, err := b.Has(ctx, d); err != nil || !has {
			t.Fatalf("round %d: Has(present) = %v, %v", round, has, err)
		}
		if has, err := b.Has(ctx, digestIn(d, byte(2+round%50))); err != nil || has {
			t.Fatalf("round %d: Has(absent) = %v, %v", round, has, err)
		}
		var ce *CorruptObjectError
		if has, err := b.Has(ctx, odd); !errors.As(err, &ce) || has {
			t.Fatalf("round %d: Has(directory) = %v, %v; want a CorruptObjectError", round, has, err)
		}
		if has, err := b.Has(ctx, qd); err != nil || !has {
			t.Fatalf("round %d: Has(queued) = %v, %v", round, has, err)
		}
	}
	if f := &b.fan[d[0]]; !f.listed {
		t.Fatalf("fan-out directory not listed after 200 queries (limit %d)", f.limit)
	}
}

// TestBatchListingSnapshot: an object removed after the batch listed its
// directory is re-created by InsertFile (which checks before trusting),
// and a Has answer from the listing never makes a temporary file count.
func TestBatchListingSnapshot(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := content(23, 7000)
	d, _, err := s.Insert(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b := s.Batch()
	for i := range 100 { // enough to list the directory
		if _, err := b.Has(ctx, digestIn(d, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if !b.fan[d[0]].listed {
		t.Fatal("directory not listed")
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	written, err := b.InsertFile(ctx, srcFile(t, data), int64(len(data)), d)
	if err != nil || !written {
		t.Fatalf("InsertFile of an object removed after the listing = %v, %v; want true, nil", written, err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatalf("object not re-created: %v", err)
	}
	if got := countTemps(listStore(t, s)); got != 0 {
		t.Fatalf("%d temporary files left", got)
	}
}

// TestBatchInsertStream: Insert queues a stream as an object published by
// Flush; an object already in the store is trusted (not read, not
// replaced: re-hashing is fsck's job) and the new copy dropped.
func TestBatchInsertStream(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	b := s.Batch()
	data := content(31, 70000)
	d, n, err := b.Insert(ctx, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) || d != fsverity.DigestBytes(data) {
		t.Fatalf("Insert = %s, %d, %v", d, n, err)
	}
	if has, _ := s.Has(ctx, d); has {
		t.Fatal("object visible before Flush")
	}
	if has, err := b.Has(ctx, d); err != nil || !has {
		t.Fatalf("Batch.Has(queued) = %v, %v", has, err)
	}
	// The same stream again: one copy queued.
	if _, _, err := b.Insert(ctx, bytes.NewReader(data)); err != nil || b.Pending() != 1 {
		t.Fatalf("second Insert: %v, %d pending", err, b.Pending())
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Written != 1 || st.BytesWritten != int64(len(data)) {
		t.Fatalf("Stats = %+v", st)
	}
	// Corrupt it: a new batch trusts the existing object.
	bad := append([]byte(nil), data...)
	bad[100] ^= 1
	if err := os.WriteFile(s.Path(d), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	b2 := s.Batch()
	d2, _, err := b2.Insert(ctx, bytes.NewReader(data))
	if err != nil || d2 != d || b2.Pending() != 0 {
		t.Fatalf("Insert over an existing object = %s, %v, %d pending", d2, err, b2.Pending())
	}
	if err := b2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, s.Path(d)); !bytes.Equal(got, bad) {
		t.Fatal("existing object replaced")
	}
	if names := listStore(t, s); len(names) != 1 {
		t.Fatalf("store holds %q", names)
	}
	if _, _, err := b2.Insert(ctx, bytes.NewReader(data)); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Insert after Flush: %v", err)
	}
}

// TestBatchBackgroundSync starts a background sync on every insert while
// many goroutines insert (run with -race): every object is published.
func TestBatchBackgroundSync(t *testing.T) {
	old := writebackEvery
	writebackEvery = 1
	defer func() { writebackEvery = old }()
	s := newStore(t)
	b := s.Batch()
	ds := batchInputs(t, b, 24)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := s.Verify(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if b.syncing.Load() {
		t.Fatal("background sync still running after Flush")
	}
}

// TestBatchExpectLookups: told to expect many lookups, a batch lists a
// directory at its first check, and answers as before.
func TestBatchExpectLookups(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d, _, err := s.Insert(ctx, bytes.NewReader(content(41, 3000)))
	if err != nil {
		t.Fatal(err)
	}
	b := s.Batch()
	defer b.Abort()
	b.ExpectLookups(100000)
	if has, err := b.Has(ctx, d); err != nil || !has {
		t.Fatalf("Has = %v, %v", has, err)
	}
	if !b.fan[d[0]].listed {
		t.Fatal("directory not listed at the first check")
	}
	if has, err := b.Has(ctx, digestIn(d, 3)); err != nil || has {
		t.Fatalf("Has(absent) = %v, %v", has, err)
	}
}

func TestObjectName(t *testing.T) {
	d := fsverity.DigestBytes([]byte("x"))
	name := d.String()[2:]
	if got, ok := objectName(d[0], []byte(name)); !ok || got != d {
		t.Fatalf("objectName(%s) = %s, %v", name, got, ok)
	}
	for _, bad := range []string{
		name[:61], name + "0", strings.ToUpper(name), name[:60] + "g0", name[:60] + "0 ", tempPrefix + name[:57],
	} {
		if _, ok := objectName(d[0], []byte(bad)); ok {
			t.Fatalf("objectName accepted %q", bad)
		}
	}
}
