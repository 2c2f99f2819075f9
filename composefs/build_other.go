//go:build !linux

package composefs

import (
	"context"
	"errors"
	"fmt"
)

// BuildFromDir reads a directory tree into a composefs tree. It needs
// Linux (lstat, xattr and fs-verity semantics); elsewhere it fails.
func BuildFromDir(ctx context.Context, dir string, opts BuildOptions) (*Node, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("build from %s: %w", dir, errors.ErrUnsupported)
}
