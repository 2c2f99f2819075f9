package objstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// TestStampsFollowChanges: a fan-out directory's stamp stays as it is
// while nothing happens in it and changes with every object added or
// removed there (even right after the stamp was taken), and with a
// temporary file created and removed; other directories keep theirs.
func TestStampsFollowChanges(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	empty, err := s.CurrentStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if *empty != (Stamps{}) {
		t.Fatal("a store without fan-out directories has stamps")
	}
	d, _, err := s.Insert(ctx, bytes.NewReader(content(1, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	settled, err := s.SettledStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := d[0]
	if settled[i].IsZero() {
		t.Fatal("no settled stamp for a directory changed just now (fine timestamps expected here)")
	}
	if age := time.Duration(wallNow() - settled[i].Ctime); age < settleMargin {
		t.Fatalf("settled stamp only %v old (margin %v)", age, settleMargin)
	}
	same, err := s.CurrentStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !same[i].Same(settled[i]) || *same != *settled {
		t.Fatal("stamps changed while nothing happened")
	}

	steps := []struct {
		what string
		do   func() error
	}{
		{"object added", func() error { return os.WriteFile(s.Path(digestIn(d, 1)), []byte("x"), 0o444) }},
		{"object removed", func() error { return s.Remove(d) }},
		{"temporary file", func() error {
			p := filepath.Join(s.dir, d.ObjectPath()) + ".tmp"
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				return err
			}
			return os.Remove(p)
		}},
	}
	for _, step := range steps {
		before, err := s.CurrentStamps(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		after, err := s.CurrentStamps(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for j := range after {
			if j == int(i) || before[j] == after[j] {
				continue
			}
			t.Fatalf("%s in %02x changed the stamp of %02x", step.what, i, j)
		}
		if before[i].Same(after[i]) {
			t.Fatalf("%s: stamp of its directory unchanged", step.what)
		}
	}
}

// TestSettledStampsElsewhere: a store on a filesystem not known to keep
// fine directory times gets no stamps at all; where it is, a directory
// changed again while SettledStamps waits for it to settle gets none.
func TestSettledStampsElsewhere(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d, _, err := s.Insert(ctx, bytes.NewReader(content(3, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	if !stampable(s.dir) {
		t.Fatalf("test directory %s is not on a filesystem with fine timestamps", s.dir)
	}
	saved := stampableFor
	stampableFor = func(string) bool { return false }
	st, err := s.SettledStamps(ctx)
	stampableFor = saved
	if err != nil {
		t.Fatal(err)
	}
	if *st != (Stamps{}) {
		t.Fatal("stamps on a filesystem not known to keep fine times")
	}

	// Times ahead of the clock (set back since): no stamp, no wait.
	savedNow := wallNow
	wallNow = func() int64 { return savedNow() - int64(time.Hour) }
	start := time.Now()
	st, err = s.SettledStamps(ctx)
	wallNow = savedNow
	if err != nil {
		t.Fatal(err)
	}
	if !st[d[0]].IsZero() || time.Since(start) > 10*time.Second {
		t.Fatalf("directory from the future: stamp %v after %v", st[d[0]], time.Since(start))
	}

	// Changed again during the wait: no stamp for that directory.
	savedMargin := settleMargin
	defer func() { settleMargin, wallNow = savedMargin, savedNow }()
	settleMargin = 200 * time.Millisecond
	other := digestIn(d, 7)
	wallNow = func() int64 {
		wallNow = savedNow // once: right after the first stats
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.WriteFile(s.Path(other), []byte("x"), 0o444)
		}()
		return savedNow()
	}
	st, err = s.SettledStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st[d[0]].IsZero() {
		t.Fatal("a directory changed during the settling wait kept a stamp")
	}
	if _, err := os.Stat(s.Path(other)); err != nil {
		t.Fatal(err)
	}
}

// TestCheckPresent: every object present passes, by stats (a few) or by
// a listing (many); a missing object, or a directory in an object's
// place, is ErrObjectsMissing naming it.
func TestCheckPresent(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	d, _, err := s.Insert(ctx, bytes.NewReader(content(4, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	var many []fsverity.Digest
	for k := range 12 {
		o := digestIn(d, byte(k))
		if err := os.WriteFile(s.Path(o), []byte("x"), 0o444); err != nil {
			t.Fatal(err)
		}
		many = append(many, o)
	}
	for _, ds := range [][]fsverity.Digest{{d}, many, append([]fsverity.Digest{d}, many...)} {
		if err := s.CheckPresent(ctx, d[0], ds); err != nil {
			t.Fatalf("%d present objects: %v", len(ds), err)
		}
	}
	if err := s.CheckPresent(ctx, d[0]^1, []fsverity.Digest{d}); err == nil {
		t.Fatal("an object checked in another fan-out directory passed")
	}
	odd := digestIn(d, 200)
	if err := os.Mkdir(s.Path(odd), 0o755); err != nil {
		t.Fatal(err)
	}
	missing := digestIn(d, 201)
	for _, bad := range []fsverity.Digest{odd, missing} {
		for _, ds := range [][]fsverity.Digest{{bad}, append([]fsverity.Digest{bad}, many...)} {
			err := s.CheckPresent(ctx, d[0], ds)
			if !errors.Is(err, ErrObjectsMissing) {
				t.Fatalf("%d objects, %s bad: %v, want ErrObjectsMissing", len(ds), bad, err)
			}
			if err != nil && !strings.Contains(err.Error(), s.Path(bad)) {
				t.Fatalf("error does not name the object: %v", err)
			}
		}
	}
	other := d
	other[0] ^= 0x55
	err = s.CheckPresent(ctx, other[0], []fsverity.Digest{other, digestIn(other, 1), digestIn(other, 2),
		digestIn(other, 3), digestIn(other, 4), digestIn(other, 5), digestIn(other, 6), digestIn(other, 7)})
	if !errors.Is(err, ErrObjectsMissing) {
		t.Fatalf("objects of a missing fan-out directory: %v", err)
	}
}
