package mount

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// probeKernelVerity refuses VerifyKernel where the kernel cannot enforce
// object digests: it measures one referenced object. No fs-verity in the
// kernel or the object store's filesystem means overlayfs' verity=require
// would fail every read (EIO); an object without fs-verity enabled, the
// same. Both are refused up front with what to do instead.
func probeKernelVerity(im *erofs.Image, basedirs []string) error {
	obj, err := im.FirstObject()
	if err != nil {
		return fmt.Errorf("mount: find an object: %w", err)
	}
	if obj == "" {
		return nil // nothing to read from the store
	}
	if _, err := fsverity.ParseObjectPath(obj); err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	base, p, err := findObject(basedirs, obj)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	f, err := os.Open(p)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	defer f.Close()
	_, err = fsverity.Measure(f)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fsverity.ErrNotSupported):
		return fmt.Errorf("mount: %w on %s for %s: the kernel cannot enforce object digests; "+
			"use verify=objects to check every object in user space before mounting, or verify=none to mount unverified (%v)",
			ErrVerityUnsupported, fsTypeName(base), base, err)
	case errors.Is(err, fsverity.ErrNotEnabled), errors.Is(err, fsverity.ErrAlgorithmMismatch):
		return fmt.Errorf("mount: %w: object %s has no SHA-256 fs-verity, so every read of it would fail; "+
			"enable fs-verity on the objects, or use verify=objects or verify=none (%v)", ErrVerityUnsupported, p, err)
	}
	return fmt.Errorf("mount: measure object %s: %w", p, err)
}

// CheckObjects checks that every object the composefs image r (of size
// bytes) references exists in one of basedirs (searched in order, as
// overlayfs does) and has the fs-verity digest its name says, computed in
// user space on all CPUs. The first bad object in sorted order is
// reported as an *ObjectError (missing: errors.Is fs.ErrNotExist and
// ErrMissingObject; altered: a *DigestMismatchError inside). It protects
// against objects altered before the call, not after.
func CheckObjects(ctx context.Context, r io.ReaderAt, size int64, basedirs []string) error {
	im, err := erofs.Open(r, size)
	if err != nil {
		return fmt.Errorf("mount: %w: %w", ErrNotComposefs, err)
	}
	return verifyImageObjects(ctx, im, basedirs)
}

func verifyImageObjects(ctx context.Context, im *erofs.Image, basedirs []string) error {
	objs, err := im.Objects()
	if err != nil {
		return fmt.Errorf("mount: list objects: %w", err)
	}
	pool := fsverity.NewPool(ctx, fsverity.PoolOptions{Algorithm: fsverity.SHA256})
	var stop error // a problem found before hashing, at the submission point
	for _, obj := range objs {
		want, err := fsverity.ParseObjectPath(obj)
		if err != nil {
			stop = &ObjectError{Object: obj, Err: fmt.Errorf("cannot verify: %w", err)}
			break
		}
		_, p, err := findObject(basedirs, obj)
		if err != nil {
			stop = &ObjectError{Object: obj, Err: err}
			break
		}
		if err := pool.Submit(p, func(r fsverity.FileResult) error {
			if subtle.ConstantTimeCompare(r.Digest[:], want[:]) != 1 {
				return &ObjectError{Object: obj, Err: &DigestMismatchError{What: p, Expected: want, Found: r.Digest}}
			}
			return nil
		}); err != nil {
			break // the pool stopped; Wait says why
		}
	}
	// Errors come in submission (sorted) order: one from the pool is
	// about an object before the one that stopped the loop.
	if err := pool.Wait(); err != nil {
		var oe *ObjectError
		if errors.As(err, &oe) {
			return err
		}
		return fmt.Errorf("mount: verify objects: %w", err)
	}
	return stop
}

// findObject returns the basedir holding obj and the object's path.
func findObject(basedirs []string, obj string) (base, path string, err error) {
	for _, d := range basedirs {
		p := filepath.Join(d, obj)
		st, err := os.Lstat(p)
		if err == nil && st.Mode().IsRegular() {
			return d, p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
	}
	return "", "", fmt.Errorf("not in %q: %w", basedirs, fs.ErrNotExist)
}
