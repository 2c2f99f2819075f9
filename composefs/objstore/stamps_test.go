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
	if age := time.Duration(wallNow() - settled[i].Ctime); age < fineMargin {
		t.Fatalf("settled stamp only %v old (margin %v)", age, fineMargin)
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

// TestSettledStampsCoarse: on a filesystem whose timestamps are coarse, a
// directory changed within the margin gets no stamp rather than one a
// later change could repeat; an older one keeps its stamp.
func TestSettledStampsCoarse(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	old, _, err := s.Insert(ctx, bytes.NewReader(content(3, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	young := digestIn(old, 1)
	young[0] ^= 0xff // another directory
	if err := os.MkdirAll(filepath.Dir(s.Path(young)), 0o755); err != nil {
		t.Fatal(err)
	}
	longAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Dir(s.Path(old)), longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	saved := coarseMargin
	coarseMargin = time.Hour + time.Minute // even the chtimes'd directory is young by ctime
	defer func() { coarseMargin = saved }()
	savedMargin := timestampMarginFor
	timestampMarginFor = func(string) time.Duration { return coarseMargin }
	defer func() { timestampMarginFor = savedMargin }()
	st, err := s.SettledStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st[old[0]].IsZero() || !st[young[0]].IsZero() {
		t.Fatal("a directory changed within a coarse margin has a settled stamp")
	}
	coarseMargin = 0
	st, err = s.SettledStamps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st[old[0]].IsZero() || st[young[0]].IsZero() {
		t.Fatal("directories older than the margin lost their stamps")
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
