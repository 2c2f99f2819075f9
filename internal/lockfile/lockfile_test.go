package lockfile

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestExclusiveExcludes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "locks", "a.lock")
	l, err := Exclusive(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryExclusive(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("second exclusive lock: %v, want ErrLocked", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := Shared(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shared lock while exclusive held: %v", err)
	}
	l.Unlock()
	l.Unlock()
	l2, err := TryExclusive(p)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}

func TestSharedCoexist(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.lock")
	a, err := Shared(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Shared(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryExclusive(p); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive while shared held: %v", err)
	}
	a.Unlock()
	b.Unlock()
}
