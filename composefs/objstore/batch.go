package objstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// Batch inserts many objects with one durability barrier instead of one
// fsync per object. InsertFile copies the content into a temporary file
// of the store (not yet visible as an object); Flush makes all of them
// durable with a single filesystem sync, then publishes them under their
// names (no-clobber, as Store.InsertFile) and syncs again so that the
// names are durable too. An object visible under its final name is thus
// always complete and durable. Abort drops what has not been published.
//
// A Batch is safe for concurrent use; it must end with Flush or Abort.
type Batch struct {
	s       *Store
	mu      sync.Mutex
	pending map[fsverity.Digest]string // object → base name of its temp file
	done    bool
}

// ErrBatchDone is returned by a Batch used after Flush or Abort.
var ErrBatchDone = errors.New("object store: batch already flushed or aborted")

// Batch starts a batch of inserts into s.
func (s *Store) Batch() *Batch {
	return &Batch{s: s, pending: make(map[fsverity.Digest]string)}
}

// InsertFile is Store.InsertFile deferred to Flush: written reports that
// the object was queued (it did not exist and is not queued already). An
// existing object is verified as by Store.InsertFile.
func (b *Batch) InsertFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest) (written bool, err error) {
	b.mu.Lock()
	_, queued := b.pending[d]
	done := b.done
	b.mu.Unlock()
	if done {
		return false, ErrBatchDone
	}
	if queued {
		return false, nil
	}
	name, exists, err := b.s.prepareFile(ctx, src, size, d, false)
	if exists || err != nil {
		return false, err
	}
	base, err := filepath.Rel(b.s.dir, name) // "ab/.tmp-…": staged in its fan-out directory
	if err != nil {
		os.Remove(name)
		return false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, queued = b.pending[d]
	if b.done || queued {
		os.Remove(name)
		if b.done {
			return false, ErrBatchDone
		}
		return false, nil
	}
	b.pending[d] = base
	return true, nil
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
	name, ok := b.pending[d]
	delete(b.pending, d)
	b.mu.Unlock()
	if ok {
		os.Remove(filepath.Join(b.s.dir, name))
	}
	return ok
}

// Abort removes every queued temporary file and ends the batch. Objects
// already published by an interrupted Flush stay (they are complete and
// durable).
func (b *Batch) Abort() {
	b.mu.Lock()
	pending := b.pending
	b.pending, b.done = nil, true
	b.mu.Unlock()
	for _, name := range pending {
		os.Remove(filepath.Join(b.s.dir, name))
	}
}

// Flush makes every queued object durable and publishes it, then ends the
// batch. On error (or cancellation) the objects not yet published are
// removed, as by Abort.
func (b *Batch) Flush(ctx context.Context) error {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return ErrBatchDone
	}
	pending := b.pending
	b.pending, b.done = nil, true
	b.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	drop := func() {
		for _, name := range pending {
			os.Remove(filepath.Join(b.s.dir, name))
		}
	}
	names := make([]string, 0, len(pending))
	for _, name := range pending {
		names = append(names, name)
	}
	if err := ctx.Err(); err != nil {
		drop()
		return err
	}
	if err := syncStore(b.s.dir, names); err != nil {
		drop()
		return fmt.Errorf("object store: %w", err)
	}
	var firstErr error
	for d, name := range pending {
		delete(pending, d)
		tmp := filepath.Join(b.s.dir, name)
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		if firstErr != nil {
			os.Remove(tmp)
			continue
		}
		// publish removes tmp itself when it does not rename it.
		if _, err := b.s.publish(ctx, tmp, d, false); err != nil {
			firstErr = err
		}
	}
	// Make the new names durable: one more sync of the filesystem covers
	// every fan-out directory touched.
	if err := syncStore(b.s.dir, nil); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("object store: %w", err)
	}
	return firstErr
}
