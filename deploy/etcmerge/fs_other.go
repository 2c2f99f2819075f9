//go:build !linux

package etcmerge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// The merge relies on Linux calls (lchown, xattrs, utimensat, syncfs,
// renameat2); elsewhere Merge reports errors.ErrUnsupported.

var errUnsupported = fmt.Errorf("etcmerge: %w on this system", errors.ErrUnsupported)

func (m *merger) copyTree(src, rel string) error { return errUnsupported }
func (m *merger) finishDirs() error              { return errUnsupported }
func publish(stage, out string) error            { return errUnsupported }
func removeAll(p string) error                   { return os.RemoveAll(p) }

func (m *merger) metaEqual(pa string, ia fs.FileInfo, pb string, ib fs.FileInfo) (bool, error) {
	return false, errUnsupported
}

func (m *merger) treeEqual(pa string, ia fs.FileInfo, pb string, ib fs.FileInfo) (bool, error) {
	return false, errUnsupported
}
