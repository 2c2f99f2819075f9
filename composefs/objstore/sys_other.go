//go:build !linux

package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

func openObject(p string) (*os.File, error) {
	st, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return nil, &fs.PathError{Op: "open", Path: p, Err: errSymlink}
	}
	return os.Open(p)
}

var errSymlink = errors.New("is a symlink")

func isSymlinkErr(err error) bool { return errors.Is(err, errSymlink) }

// renameNoReplace uses link+unlink for its no-clobber semantics.
func renameNoReplace(oldpath, newpath string) error {
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}

func copyContent(ctx context.Context, dst, src *os.File, size int64) (bool, fsverity.Digest, error) {
	st, err := src.Stat()
	if err != nil {
		return false, fsverity.Digest{}, err
	}
	if st.Size() < size {
		return false, fsverity.Digest{}, fmt.Errorf("source has %d bytes, want %d: %w", st.Size(), size, io.ErrUnexpectedEOF)
	}
	sum, err := copyRW(ctx, dst, src, size)
	return true, sum, err
}

// syncStore makes the named files in dir durable, one fsync each (there
// is no syncfs here); without names it fsyncs dir and its fan-out
// directories, making published names durable.
func syncStore(dir string, names []string) error {
	if names == nil {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		names = []string{"."}
		for _, e := range ents {
			if e.IsDir() {
				names = append(names, e.Name())
			}
		}
	}
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
