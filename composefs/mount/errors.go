package mount

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// Errors callers branch on.
var (
	// ErrVerityUnsupported: VerifyKernel was asked for but the kernel or
	// the object store's filesystem cannot enforce fs-verity.
	ErrVerityUnsupported = errors.New("fs-verity is not available")
	// ErrDigestMismatch classifies *DigestMismatchError.
	ErrDigestMismatch = errors.New("fs-verity digest mismatch")
	// ErrObject classifies *ObjectError (missing or corrupt object).
	ErrObject = errors.New("bad object")
	// ErrMissingObject classifies an *ObjectError about an object that
	// is in none of the object directories (such errors also match
	// fs.ErrNotExist).
	ErrMissingObject = errors.New("missing object")
	// ErrNotComposefs: the image has no composefs header.
	ErrNotComposefs = errors.New("not a composefs image")
)

// DigestMismatchError reports a file whose fs-verity digest is not the
// expected one.
type DigestMismatchError struct {
	What     string
	Expected fsverity.Digest
	Found    fsverity.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s: fs-verity digest mismatch: expected %s, found %s", e.What, e.Expected, e.Found)
}

// Unwrap makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestMismatchError) Unwrap() error { return ErrDigestMismatch }

// ObjectError reports a referenced object that is missing or corrupt.
type ObjectError struct {
	Object string // object path relative to the store, ab/cdef…
	Err    error
}

func (e *ObjectError) Error() string { return fmt.Sprintf("object %s: %v", e.Object, e.Err) }

// Is makes errors.Is(err, ErrObject) true, and errors.Is(err,
// ErrMissingObject) for a missing object; Unwrap exposes the cause.
func (e *ObjectError) Is(target error) bool {
	switch target {
	case ErrObject:
		return true
	case ErrMissingObject:
		return errors.Is(e.Err, fs.ErrNotExist)
	}
	return false
}

// Unwrap returns the cause (fs.ErrNotExist or a *DigestMismatchError).
func (e *ObjectError) Unwrap() error { return e.Err }
