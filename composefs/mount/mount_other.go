//go:build !linux

package mount

import (
	"context"
	"errors"
)

// Mount is only implemented on Linux.
func Mount(ctx context.Context, image, target string, opts Options) error {
	return errors.ErrUnsupported
}

// Unmount is only implemented on Linux.
func Unmount(target string) error { return errors.ErrUnsupported }

func fsTypeName(dir string) string { return "the filesystem" }
