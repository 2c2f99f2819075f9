package objstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// DirStamp identifies one state of a fan-out directory: creating,
// removing or renaming an entry in it gives it a new modification and
// change time, so a directory whose stamp is unchanged holds the same
// names as when the stamp was taken. The zero DirStamp stands for "not
// known" and matches nothing.
type DirStamp struct {
	Dev, Ino uint64
	Size     int64
	Mtime    int64 // nanoseconds since the epoch
	Ctime    int64
}

// IsZero reports whether s is the "not known" stamp.
func (s DirStamp) IsZero() bool { return s == DirStamp{} }

// Same reports whether s and t are the same known state.
func (s DirStamp) Same(t DirStamp) bool { return !s.IsZero() && s == t }

// Stamps are the stamps of the 256 fan-out directories, indexed by the
// first byte of the digests they hold.
//
// They let a cache vouch for objects without looking at the store: take
// settled stamps (SettledStamps), then check that the objects are there;
// later, while the stamp of an object's directory is unchanged
// (CurrentStamps), nothing was removed from it, so the object is still
// there. Objects are immutable once published, so presence is all a
// stamp can vouch for; their content is fsck's business.
type Stamps [256]DirStamp

// CurrentStamps stats the fan-out directories as they are now (a missing
// directory or one that is not a directory gets the zero stamp). Compare
// them with stamps taken earlier by SettledStamps.
func (s *Store) CurrentStamps(ctx context.Context) (*Stamps, error) {
	var st Stamps
	for i := range st {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		d, err := s.dirStamp(byte(i))
		if err != nil {
			return nil, err
		}
		st[i] = d
	}
	return &st, nil
}

// SettledStamps are CurrentStamps fit to be recorded: a stamp is kept only
// once its directory's last change is older than the filesystem's
// timestamp granularity, so that any later change is sure to give a
// different stamp (a removal within the same clock tick as the stat could
// otherwise leave the times as they were); it waits up to settleMargin
// for directories changed just now. Only local filesystems known to keep
// fine timestamps (ext4, XFS, Btrfs, tmpfs, F2FS) get stamps at all;
// elsewhere (network filesystems with cached attributes, FAT with two
// seconds, overlays) every stamp is zero.
func (s *Store) SettledStamps(ctx context.Context) (*Stamps, error) {
	if !stampableFor(s.dir) {
		return &Stamps{}, nil
	}
	st, err := s.CurrentStamps(ctx)
	if err != nil {
		return nil, err
	}
	now := wallNow()
	var racy []int
	latest := int64(0)
	for i, d := range st {
		if !d.IsZero() && now-max(d.Mtime, d.Ctime) < settleMargin.Nanoseconds() {
			racy = append(racy, i)
			latest = max(latest, d.Mtime, d.Ctime)
		}
	}
	if len(racy) == 0 {
		return st, nil
	}
	wait := latest + settleMargin.Nanoseconds() - now
	if wait > settleMargin.Nanoseconds() {
		// Times ahead of the clock (it was set back): waiting could
		// take hours, and their order says nothing. No stamps.
		for _, i := range racy {
			st[i] = DirStamp{}
		}
		return st, nil
	}
	if err := sleepCtx(ctx, wait); err != nil {
		return nil, err
	}
	for _, i := range racy {
		d, err := s.dirStamp(byte(i))
		if err != nil {
			return nil, err
		}
		if d != st[i] {
			d = DirStamp{} // changed again meanwhile: not settled
		}
		st[i] = d
	}
	return st, nil
}

// ErrObjectsMissing is returned by CheckPresent when an object is not in
// the store.
var ErrObjectsMissing = errors.New("object store: objects missing")

// CheckPresent checks that every object of ds, all in the fan-out
// directory of first, is in the store as a regular file, else returns
// ErrObjectsMissing naming one that is not: by one listing of the
// directory, or a stat per object when there are few.
func (s *Store) CheckPresent(ctx context.Context, first byte, ds []fsverity.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	for _, d := range ds {
		if d[0] != first {
			return fmt.Errorf("object store: %s is not in fan-out directory %02x", d, first)
		}
	}
	if len(ds) < 8 {
		for _, d := range ds {
			ok, err := s.Has(ctx, d)
			if errors.Is(err, ErrCorrupt) {
				return fmt.Errorf("%w: %w", ErrObjectsMissing, err)
			}
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: %s", ErrObjectsMissing, s.Path(d))
			}
		}
		return nil
	}
	present, _, err := s.listFanout(first, len(ds))
	if err != nil {
		return err
	}
	for _, d := range ds {
		if _, ok := present[d]; !ok {
			return fmt.Errorf("%w: %s", ErrObjectsMissing, s.Path(d))
		}
	}
	return nil
}

// settleMargin is how long after a change SettledStamps trusts a
// directory's times: a few kernel clock ticks (4-10 ms each), which is
// the granularity of the filesystems it stamps. A variable for tests.
var settleMargin = 20 * time.Millisecond

// stampableFor is stampable (a variable for tests).
var stampableFor = stampable

// wallNow is the wall clock in nanoseconds since the epoch, as file
// times are (a variable for tests).
var wallNow = func() int64 { return time.Now().UnixNano() }

// sleepCtx waits ns nanoseconds or until ctx is done.
func sleepCtx(ctx context.Context, ns int64) error {
	if ns <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
