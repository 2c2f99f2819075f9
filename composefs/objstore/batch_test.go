package objstore

import (
	"context"
	"errors"
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
