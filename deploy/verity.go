package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// VerityResult describes EnableVerity.
type VerityResult struct {
	Objects        int `json:"objects"`         // objects whose kernel measurement was checked
	ObjectsEnabled int `json:"objects-enabled"` // of those, fs-verity newly enabled
	Images         int `json:"images"`          // deployment images checked
	ImagesEnabled  int `json:"images-enabled"`
}

// EnableVerity enables fs-verity (SHA-256, 4 KiB blocks) on every object of
// the sysroot's repository and on every deployment's image.cfs that lacks
// it, and checks the kernel's measurement of each against its name (object)
// or its deployment's signed image digest. Objects and images written by
// pull and switch on a file system with fs-verity have it already; this is
// for a sysroot written where fs-verity was not available (an image built
// on another machine, a file system that gained the feature), which the
// initramfs can then mount with verity = require.
//
// A file whose measurement differs from its name is an error naming it
// (fs-verity, once enabled, cannot be removed: such a file must be deleted
// or repaired). On a file system without fs-verity the error matches
// fsverity.ErrNotSupported. Runs under the deploy lock, on all CPUs.
func (s *Sysroot) EnableVerity(ctx context.Context) (*VerityResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()

	res := &VerityResult{}
	var objs, objsEnabled atomic.Int64
	store := s.repo.Objects
	work := make(chan fsverity.Digest)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	workers := s.workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				enabled, err := enableAndMeasure(store.Path(d), d)
				if err != nil {
					fail(fmt.Errorf("object %s: %w", d.ObjectPath(), err))
					continue
				}
				objs.Add(1)
				if enabled {
					objsEnabled.Add(1)
				}
			}
		}()
	}
	walkErr := store.Walk(ctx, func(d fsverity.Digest) error {
		select {
		case work <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if walkErr != nil {
		return nil, walkErr
	}
	res.Objects, res.ObjectsEnabled = int(objs.Load()), int(objsEnabled.Load())

	deps, err := s.listDeployments()
	if err != nil {
		return nil, err
	}
	for _, d := range deps {
		m, _, _, err := s.readDeploymentCommit(d)
		if err != nil {
			return nil, err
		}
		enabled, err := enableAndMeasure(filepath.Join(s.deployDir(d), ImageFile), m.Image.Digest)
		if err != nil {
			return nil, fmt.Errorf("deployment %s image: %w", d, err)
		}
		res.Images++
		if enabled {
			res.ImagesEnabled++
		}
	}
	return res, nil
}

// enableAndMeasure enables fs-verity on p unless it has it, and checks the
// kernel's measurement against want. enabled reports a new enable.
func enableAndMeasure(p string, want fsverity.Digest) (enabled bool, err error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	got, err := fsverity.Measure(f)
	if errors.Is(err, fsverity.ErrNotEnabled) {
		if err := fsverity.Enable(f, fsverity.SHA256); err != nil && !errors.Is(err, fsverity.ErrAlreadyEnabled) {
			return false, fmt.Errorf("enable fs-verity on %s: %w", p, err)
		}
		enabled = true
		got, err = fsverity.Measure(f)
	}
	if err != nil {
		return false, err
	}
	if got != want {
		return enabled, pull.Mismatch(p+" (kernel measurement)", want, got)
	}
	return enabled, nil
}
