package initramfs

import (
	"errors"
	"fmt"
	"strings"
)

// ErrCheck classifies every *CheckError: a boot check refused the
// deployment.
var ErrCheck = errors.New("boot check failed")

// Names of the checks, in the order MountRoot runs them.
const (
	CheckCmdline     = "kernel command line"
	CheckConfig      = "initramfs configuration"
	CheckKeys        = "trusted keys"
	CheckPhysical    = "physical root"
	CheckPath        = "deployment path"
	CheckSignature   = "signature"
	CheckCmdlineHash = "command line digest"
	CheckTPM         = "tpm"
	CheckRollback    = "rollback"
	CheckImage       = "image digest"
	CheckVerity      = "fs-verity"
	CheckObjects     = "objects"
	CheckMount       = "mount"
	CheckMeasure     = "measure"
)

// CheckError is a refused boot: which check, for which deployment, what
// was expected and what was found, and the underlying error.
type CheckError struct {
	Check      string // one of the Check* names
	Deployment string // the cfs.deployment= path, "" if not known yet
	Expected   string // may be ""
	Actual     string // may be ""
	Err        error
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s check failed", e.Check)
	if e.Deployment != "" {
		fmt.Fprintf(&b, " for deployment %s", e.Deployment)
	}
	if e.Expected != "" || e.Actual != "" {
		fmt.Fprintf(&b, ": expected %s, actual %s", orNone(e.Expected), orNone(e.Actual))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Is makes errors.Is(err, ErrCheck) true.
func (e *CheckError) Is(target error) bool { return target == ErrCheck }

// Unwrap returns the underlying error.
func (e *CheckError) Unwrap() error { return e.Err }
