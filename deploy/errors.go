package deploy

import (
	"errors"

	"github.com/cfs-dev/cfs/commit/pull"
)

// Errors callers branch on.
var (
	// ErrNotSysroot means the directory was not set up by Init.
	ErrNotSysroot = errors.New("not a cfs sysroot (run cfs-deploy init)")
	// ErrVerification classifies every security refusal: a commit whose
	// signature does not verify against the sysroot's trust store, an
	// image, dump, object or boot file whose digest differs from the
	// signed one. Errors of this class are *VerificationError. It is the
	// same class as pull.ErrVerification.
	ErrVerification = pull.ErrVerification
	// ErrMissingObject means an object the commit's tree references is
	// not in the sysroot's repository (pull.ErrMissingObject).
	ErrMissingObject = pull.ErrMissingObject
	// ErrNoDeployment means the operation needs a deployment that does
	// not exist (no default to upgrade from, no rollback target, an index
	// out of range).
	ErrNoDeployment = errors.New("no such deployment")
	// ErrNotStaged means finalize found no staged deployment.
	ErrNotStaged = errors.New("no staged deployment")
	// ErrBadKarg means a --karg or --karg-delete cannot be applied.
	ErrBadKarg = errors.New("bad kernel argument")
	// ErrEntries means the boot entries are in a state cfs refuses to
	// rewrite (something other than regular files in the entries
	// directory, or a set in which the new default would not come first).
	ErrEntries = errors.New("boot entries")
)

// VerificationError is a security refusal (see pull.VerificationError).
type VerificationError = pull.VerificationError

// DigestMismatchError reports content whose fs-verity digest is not the
// signed one (see pull.DigestMismatchError).
type DigestMismatchError = pull.DigestMismatchError

func verifyErr(what string, err error) error {
	return &VerificationError{What: what, Err: err}
}
