// Package cli holds the cobra commands of the cfs tools. Each verb is a
// constructor returning a *cobra.Command with its options struct; the
// commands parse and validate flags, then call one library function.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/spf13/cobra"
)

// Exit codes shared by the cfs tools.
const (
	ExitOK       = 0
	ExitFailure  = 1 // I/O and other errors
	ExitUsage    = 2 // bad command line
	ExitInvalid  = 3 // invalid input (bad dump, bad tree, corrupt image)
	ExitVerify   = 4 // a verification failed (digest mismatch, tampered object)
	ExitNoVerity = 5 // fs-verity needed but not available
)

// usageError marks an error in the command line.
type usageError struct{ error }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	var ue usageError
	var dm *DigestMismatch
	var ve verifyError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &dm), errors.As(err, &ve):
		return ExitVerify
	case errors.Is(err, fsverity.ErrNotSupported), errors.Is(err, mount.ErrVerityUnsupported):
		return ExitNoVerity
	case errors.Is(err, mount.ErrDigestMismatch), errors.Is(err, mount.ErrObject), errors.Is(err, objstore.ErrCorrupt), errors.As(err, new(*sign.VerificationError)):
		return ExitVerify
	case errors.Is(err, composefs.ErrInvalid), errors.Is(err, erofs.ErrCorrupt), errors.Is(err, erofs.ErrUnsupported):
		return ExitInvalid
	}
	return ExitFailure
}

// DigestMismatch is reported when a computed digest differs from the one
// the user asked for.
type DigestMismatch struct {
	What     string
	Expected string
	Found    string
}

func (e *DigestMismatch) Error() string {
	return fmt.Sprintf("%s: fs-verity digest mismatch: expected %s, found %s", e.What, e.Expected, e.Found)
}

// Run executes a root command with the process's arguments and returns the
// exit code, printing the error (never the usage) on stderr.
func Run(root *cobra.Command) int {
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: %v\n", root.Name(), err)
	}
	return ExitCode(err)
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (%d argument(s)), got %d", cmd.CommandPath(), names, n, len(args))
		}
		return nil
	}
}

// openInput opens a file argument, "-" meaning stdin.
func openInput(cmd *cobra.Command, name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(cmd.InOrStdin()), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// debugLogger logs every level on the command's stderr (--verbose).
func debugLogger(cmd *cobra.Command) *slog.Logger {
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
