package fsverity

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// makeTree writes n files of assorted sizes (some large, so that workers
// finish out of order) and returns their paths.
func makeTree(t *testing.T, n int) []string {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	var paths []string
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%4))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		size := r.IntN(20000)
		if i%7 == 0 {
			size = 1<<20 + r.IntN(1<<20)
		}
		p := filepath.Join(sub, fmt.Sprintf("f%03d", i))
		if err := os.WriteFile(p, randomBytes(r, size), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestDigestFilesMatchesSequential(t *testing.T) {
	paths := makeTree(t, 60)
	ctx := context.Background()
	want := make([]FileResult, len(paths))
	for i, p := range paths {
		d, n, err := DigestFile(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = FileResult{Path: p, Size: n, Digest: d}
	}
	for _, workers := range []int{0, 1, 3, 16} {
		got, err := DigestFiles(ctx, paths, workers)
		if err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		if len(got) != len(want) {
			t.Fatalf("workers %d: %d results, want %d", workers, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("workers %d result %d: %+v, want %+v", workers, i, got[i], want[i])
			}
		}
	}
	if got, err := DigestFiles(ctx, nil, 2); err != nil || len(got) != 0 {
		t.Errorf("no paths: %v, %v", got, err)
	}
}

func TestPoolDeliversInOrderSHA512(t *testing.T) {
	paths := makeTree(t, 40)
	p := NewPool(context.Background(), PoolOptions{Algorithm: SHA512, Workers: 4})
	var order []string
	var inCallback atomic.Int32
	for _, path := range paths {
		if err := p.Submit(path, func(r FileResult) error {
			if inCallback.Add(1) != 1 {
				t.Error("callbacks ran concurrently")
			}
			defer inCallback.Add(-1)
			d, _, err := DigestFile512(context.Background(), r.Path)
			if err != nil {
				return err
			}
			if r.Digest512 != d || !r.Digest.IsZero() {
				t.Errorf("%s: pool %s, sequential %s", r.Path, r.Digest512, d)
			}
			order = append(order, r.Path)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, "\n") != strings.Join(paths, "\n") {
		t.Errorf("delivery order differs from submission order:\n%v", order)
	}
	if err := p.Submit(paths[0], nil); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Submit after Wait: %v, want ErrPoolClosed", err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("second Wait: %v", err)
	}
}

// The error reported is the first failing path in input order, however
// the workers were scheduled.
func TestDigestFilesFirstErrorInInputOrder(t *testing.T) {
	paths := makeTree(t, 30)
	dir := filepath.Dir(filepath.Dir(paths[0]))
	missing1 := filepath.Join(dir, "missing-1")
	missing2 := filepath.Join(dir, "missing-2")
	paths = append(paths[:10], append([]string{missing1}, paths[10:]...)...)
	paths = append(paths, missing2)
	for range 5 {
		got, err := DigestFiles(context.Background(), paths, 4)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing1) {
			t.Fatalf("err = %v, want ErrNotExist for %s", err, missing1)
		}
		if got != nil {
			t.Fatalf("results returned with an error: %d", len(got))
		}
	}
}

func TestPoolCallbackErrorStops(t *testing.T) {
	paths := makeTree(t, 30)
	stop := errors.New("stop here")
	var calls int
	p := NewPool(context.Background(), PoolOptions{Workers: 2})
	for _, path := range paths {
		if err := p.Submit(path, func(FileResult) error {
			calls++
			if calls == 5 {
				return stop
			}
			return nil
		}); err != nil {
			if !errors.Is(err, stop) {
				t.Fatalf("Submit: %v, want the callback's error", err)
			}
			break
		}
	}
	if err := p.Wait(); !errors.Is(err, stop) {
		t.Fatalf("Wait: %v, want %v", err, stop)
	}
	if calls != 5 {
		t.Errorf("%d callbacks, want 5 (none after the error)", calls)
	}
}

func TestDigestFilesCancelled(t *testing.T) {
	paths := makeTree(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DigestFiles(ctx, paths, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
