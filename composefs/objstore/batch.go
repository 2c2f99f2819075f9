package objstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// Batch inserts many objects with one durability barrier instead of one
// fsync per object. InsertFile and Insert copy the content into temporary
// files of the store (not yet visible as objects); Flush makes all of them
// durable with a single filesystem sync, then publishes them under their
// names (no-clobber, as Store.InsertFile) and syncs again so that the
// names are durable too. An object visible under its final name is thus
// always complete and durable. Abort drops what has not been published.
//
// A Batch answers existence queries (Has, and the check InsertFile makes
// before copying) from listings of the fan-out directories it reads once
// it has been asked about a directory often enough for a listing to be
// cheaper than a stat per object; the listing is a snapshot, so a batch
// is meant to be short-lived (one build) and used under a lock that keeps
// objects from being removed meanwhile (the repository's GC lock). An
// object missing from a snapshot only costs a copy: publishing never
// replaces an existing object.
//
// A Batch is safe for concurrent use; it must end with Flush or Abort,
// which also release the directory handles it keeps open.
type Batch struct {
	s *Store
	// ops is held shared by every operation and exclusively by Flush and
	// Abort, so that no operation still uses a directory handle they
	// close.
	ops     sync.RWMutex
	mu      sync.Mutex
	pending map[fsverity.Digest]staged
	done    bool
	fan     [256]fanout

	// staged counts the bytes copied; every writebackEvery bytes a
	// background sync of the filesystem starts writing them out, so that
	// the disk works while the batch is filled rather than all at Flush
	// (which made a 1 GiB build wait 1-2 s longer).
	staged   atomic.Int64
	syncing  atomic.Bool
	syncDone sync.WaitGroup

	expect atomic.Int64 // ExpectLookups
}

// staged is an object copied into a temporary file of the store.
type staged struct {
	name string // relative to the store directory: "ab/.tmp-…" or ".tmp-…"
	size int64
}

// fanout is a batch's view of one fan-out directory.
type fanout struct {
	mu  sync.Mutex
	dir dirHandle // opened on first use; closed by Flush or Abort
	// Existence queries: the first ones stat the object; after limit of
	// them the directory is listed once and answers the rest.
	queries, limit int
	sized          bool
	entries        int // estimated from the directory's size
	listed         bool
	present        map[fsverity.Digest]struct{} // regular files named like objects
	odd            map[fsverity.Digest]struct{} // other entries named like objects
}

// ErrBatchDone is returned by a Batch used after Flush or Abort.
var ErrBatchDone = errors.New("object store: batch already flushed or aborted")

// Batch starts a batch of inserts into s.
func (s *Store) Batch() *Batch {
	return &Batch{s: s, pending: make(map[fsverity.Digest]staged)}
}

// Store returns the store the batch inserts into.
func (b *Batch) Store() *Store { return b.s }

// begin starts an operation; it fails once the batch has ended. The
// caller must call b.ops.RUnlock when it returns nil.
func (b *Batch) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.ops.RLock()
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done {
		b.ops.RUnlock()
		return ErrBatchDone
	}
	return nil
}

func (b *Batch) queued(d fsverity.Digest) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.pending[d]
	return ok
}

// ExpectLookups tells the batch that about n existence checks (Has,
// InsertFile) will follow, spread evenly over the fan-out directories (as
// digests are): a directory where that is a fair share of its entries is
// listed at its first check rather than after some stats. It only changes
// the cost of the checks.
func (b *Batch) ExpectLookups(n int) { b.expect.Store(int64(n)) }

// Has reports whether the object d is in the store or queued in this
// batch. Like Store.Has it does not verify content, and an entry that is
// not a regular file is a *CorruptObjectError. The answer for objects not
// queued here may come from a listing made earlier in this batch.
func (b *Batch) Has(ctx context.Context, d fsverity.Digest) (bool, error) {
	if err := b.begin(ctx); err != nil {
		return false, err
	}
	defer b.ops.RUnlock()
	if b.queued(d) {
		return true, nil
	}
	return b.exists(ctx, d)
}

// exists answers whether the object d exists: from the fan-out
// directory's listing if it has one, else by a stat of the object, which
// counts towards listing the directory.
func (b *Batch) exists(ctx context.Context, d fsverity.Digest) (bool, error) {
	f := &b.fan[d[0]]
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.listed {
		f.queries++
		if !f.sized {
			f.sized = true
			f.limit, f.entries = b.listLimit(d)
		}
		if f.queries <= f.limit {
			return b.statObject(f, d)
		}
		if err := b.list(f, d); err != nil {
			return false, err
		}
	}
	if _, ok := f.present[d]; ok {
		return true, nil
	}
	if _, ok := f.odd[d]; ok {
		return b.s.Has(ctx, d) // the exact error for the odd entry
	}
	return false, nil
}

// listLimit decides after how many stats into d's fan-out directory it is
// listed, and estimates its entries. Listing costs about a quarter of a
// stat per entry (ext4, about 80 bytes of directory per entry), so after
// size/640 stats half the price of a listing has been spent on stats: a
// build that looks up few of the objects of a large store never lists it,
// one that looks up most of them pays at most half again the listing.
func (b *Batch) listLimit(d fsverity.Digest) (limit, entries int) {
	st, err := os.Stat(b.fanPath(d))
	if err != nil {
		return 2, 0 // missing (listing it is free) or odd: list soon
	}
	entries = int(min(st.Size()/80, 1<<20))
	if exp := b.expect.Load(); exp > 0 && exp/256 >= int64(entries)/8 {
		return 0, entries // expected to look up a good part of it: list now
	}
	return max(2, int(st.Size()/640)), entries
}

func (b *Batch) fanPath(d fsverity.Digest) string { return b.s.fanDir(d[0]) }

// fanDir returns the fan-out directory of the digests starting with first.
func (s *Store) fanDir(first byte) string {
	return filepath.Join(s.dir, hex.EncodeToString([]byte{first}))
}

// list reads the fan-out directory of d into f.
func (b *Batch) list(f *fanout, d fsverity.Digest) error {
	present, odd, err := b.s.listFanout(d[0], f.entries)
	if err != nil {
		return err
	}
	f.present, f.odd, f.listed = present, odd, true
	return nil
}

// listFanout lists the fan-out directory of the digests starting with
// first (about sizeHint entries): the objects, regular files, in present,
// and the other entries named like objects in odd. A missing directory
// lists as empty.
func (s *Store) listFanout(first byte, sizeHint int) (present, odd map[fsverity.Digest]struct{}, err error) {
	present, odd = make(map[fsverity.Digest]struct{}, sizeHint), map[fsverity.Digest]struct{}{}
	err = readFanout(s.fanDir(first), func(name []byte, regular bool) {
		d, ok := objectName(first, name)
		if !ok {
			return
		}
		if regular {
			present[d] = struct{}{}
		} else {
			odd[d] = struct{}{}
		}
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("object store: %w", err)
	}
	return present, odd, nil
}

// hexValue maps the lowercase hex digits to their values, all else to
// 0xff.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// objectName decodes the name of an object file in the fan-out directory
// of digests starting with first; ok is false for any other name.
func objectName(first byte, name []byte) (d fsverity.Digest, ok bool) {
	if len(name) != 2*len(d)-2 {
		return d, false
	}
	d[0] = first
	bad := byte(0)
	for i := 1; i < len(d); i++ {
		hi, lo := hexValue[name[2*i-2]], hexValue[name[2*i-1]]
		bad |= hi | lo
		d[i] = hi<<4 | lo&0xf
	}
	return d, bad&0xf0 == 0
}

// InsertFile is Store.InsertFile deferred to Flush: written reports that
// the object was queued (it did not exist and is not queued already). An
// existing object is verified as by Store.InsertFile.
func (b *Batch) InsertFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest) (written bool, err error) {
	if err := b.begin(ctx); err != nil {
		return false, err
	}
	defer b.ops.RUnlock()
	if b.queued(d) {
		return false, nil
	}
	exists, err := b.exists(ctx, d)
	if err != nil {
		return false, err
	}
	if exists {
		// Verified, as Store.InsertFile does; if it vanished meanwhile,
		// copy it after all.
		if ok, err := b.s.checkExisting(ctx, d); ok || err != nil {
			return false, err
		}
	}
	name, err := b.stageFile(ctx, src, size, d)
	if err != nil {
		return false, err
	}
	b.wrote(size)
	return b.enqueue(d, staged{name: name, size: size}), nil
}

// writebackEvery is how many staged bytes start a background sync (a
// variable for tests).
var writebackEvery int64 = 128 << 20

// wrote counts staged bytes and starts a background sync every
// writebackEvery bytes (one at a time). Only an optimisation: Flush syncs
// before publishing anything regardless.
func (b *Batch) wrote(n int64) {
	after := b.staged.Add(n)
	if after/writebackEvery == (after-n)/writebackEvery || !b.syncing.CompareAndSwap(false, true) {
		return
	}
	b.syncDone.Add(1)
	go func() {
		defer b.syncDone.Done()
		defer b.syncing.Store(false)
		_ = syncStore(b.s.dir, nil)
	}()
}

// Insert stores everything r yields as an object of the batch, hashing it
// while it is written to a temporary file, and returns its digest and
// size. Unlike Store.Insert, an object that already exists is not read
// again: like Has, the batch trusts the store for content (re-hashing
// objects is fsck's job), and the new copy is dropped.
func (b *Batch) Insert(ctx context.Context, r io.Reader) (fsverity.Digest, int64, error) {
	if err := b.begin(ctx); err != nil {
		return fsverity.Digest{}, 0, err
	}
	defer b.ops.RUnlock()
	tmp, err := b.s.createTemp()
	if err != nil {
		return fsverity.Digest{}, 0, err
	}
	name := tmp.Name()
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(name)
		}
	}()
	hs := getHashState()
	n, err := writeSparse(ctx, tmp, r, hs.h, hs.buf)
	d := hs.h.Digest()
	putHashState(hs)
	if err != nil {
		return fsverity.Digest{}, n, fmt.Errorf("object store: write %s: %w", name, err)
	}
	if b.queued(d) {
		return d, n, nil
	}
	if ok, err := b.exists(ctx, d); ok || err != nil {
		return d, n, err
	}
	keep = true // finish closes it, and removes it on error
	if err := b.s.finish(tmp, d, false); err != nil {
		return d, n, err
	}
	rel, err := filepath.Rel(b.s.dir, name)
	if err != nil {
		os.Remove(name)
		return d, n, err
	}
	b.wrote(n)
	b.enqueue(d, staged{name: rel, size: n})
	return d, n, nil
}

// enqueue records a staged copy of d unless one is queued already (then
// the new copy is removed). It reports whether it queued this one.
func (b *Batch) enqueue(d fsverity.Digest, st staged) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, queued := b.pending[d]; queued {
		os.Remove(filepath.Join(b.s.dir, st.name))
		return false
	}
	b.pending[d] = st
	return true
}

// Pending returns the number of objects queued and not yet published.
func (b *Batch) Pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// Discard drops the queued object d (e.g. because its source changed
// while it was copied). It reports whether d was queued.
func (b *Batch) Discard(d fsverity.Digest) bool {
	b.mu.Lock()
	st, ok := b.pending[d]
	delete(b.pending, d)
	b.mu.Unlock()
	if ok {
		os.Remove(filepath.Join(b.s.dir, st.name))
	}
	return ok
}

// end marks the batch done, waiting for operations in flight, and returns
// what was queued (nil if it had ended already).
func (b *Batch) end() (map[fsverity.Digest]staged, bool) {
	b.ops.Lock()
	defer b.ops.Unlock()
	b.syncDone.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil, false
	}
	pending := b.pending
	b.pending, b.done = nil, true
	return pending, true
}

// release closes the directory handles.
func (b *Batch) release() {
	for i := range b.fan {
		f := &b.fan[i]
		f.mu.Lock()
		f.dir.close()
		f.dir = dirHandle{}
		f.present, f.odd = nil, nil
		f.mu.Unlock()
	}
}

// Abort removes every queued temporary file and ends the batch. Objects
// already published by an interrupted Flush stay (they are complete and
// durable).
func (b *Batch) Abort() {
	pending, _ := b.end()
	for _, st := range pending {
		os.Remove(filepath.Join(b.s.dir, st.name))
	}
	b.release()
}

// Flush makes every queued object durable and publishes it, then ends the
// batch. On error (or cancellation) the objects not yet published are
// removed, as by Abort.
func (b *Batch) Flush(ctx context.Context) error {
	pending, ok := b.end()
	if !ok {
		return ErrBatchDone
	}
	defer b.release()
	if len(pending) == 0 {
		return nil
	}
	drop := func() {
		for _, st := range pending {
			os.Remove(filepath.Join(b.s.dir, st.name))
		}
	}
	names := make([]string, 0, len(pending))
	for _, st := range pending {
		names = append(names, st.name)
	}
	if err := ctx.Err(); err != nil {
		drop()
		return err
	}
	if err := syncStore(b.s.dir, names); err != nil {
		drop()
		return fmt.Errorf("object store: %w", err)
	}
	// Publish on several goroutines, each a fan-out directory at a time
	// (renames in one directory are serialised by the kernel anyway).
	type item struct {
		d  fsverity.Digest
		st staged
	}
	var byFan [256][]item
	for d, st := range pending {
		byFan[d[0]] = append(byFan[d[0]], item{d, st})
	}
	var (
		errMu    sync.Mutex
		firstErr error
		nextFan  atomic.Int32
		wg       sync.WaitGroup
	)
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		return firstErr != nil
	}
	for range min(runtime.GOMAXPROCS(0), 8) {
		wg.Go(func() {
			for i := int(nextFan.Add(1)) - 1; i < len(byFan); i = int(nextFan.Add(1)) - 1 {
				for _, it := range byFan[i] {
					if failed() {
						os.Remove(filepath.Join(b.s.dir, it.st.name))
						continue
					}
					// publishStaged removes the temporary file itself
					// when it does not rename it.
					if _, err := b.publishStaged(ctx, it.d, it.st); err != nil {
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	// Make the new names durable: one more sync of the filesystem covers
	// every fan-out directory touched.
	if err := syncStore(b.s.dir, nil); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("object store: %w", err)
	}
	return firstErr
}
