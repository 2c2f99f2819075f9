package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// openObject opens an object read-only without following a symlink.
func openObject(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
}

// isSymlinkErr reports the error of opening a symlink with O_NOFOLLOW.
func isSymlinkErr(err error) bool { return errors.Is(err, unix.ELOOP) }

// renameNoReplace renames oldpath to newpath unless newpath exists
// (fs.ErrExist). Filesystems without RENAME_NOREPLACE get link+unlink,
// which has the same no-clobber semantics.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}

// copyContent fills dst with the first size bytes of src: a reflink when
// the filesystem can, else copy_file_range over the data extents, else a
// user-space copy. hashed reports that the data passed through user space
// and sum is its fs-verity digest.
func copyContent(ctx context.Context, dst, src *os.File, size int64) (hashed bool, sum fsverity.Digest, err error) {
	st, err := src.Stat()
	if err != nil {
		return false, sum, err
	}
	if st.Size() < size {
		return false, sum, fmt.Errorf("source has %d bytes, want %d: %w", st.Size(), size, io.ErrUnexpectedEOF)
	}
	if forceUserCopy {
		sum, err = copyRW(ctx, dst, src, size)
		return true, sum, err
	}
	if st.Size() == size {
		if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
			return false, sum, nil
		}
	}
	done, err := copyRange(ctx, dst, src, size)
	if done || err != nil {
		return false, sum, err
	}
	sum, err = copyRW(ctx, dst, src, size)
	return true, sum, err
}

// copyRange copies with copy_file_range, extent by extent so that holes of
// src stay holes. done is false when the kernel or filesystem cannot do it
// (the caller falls back to a user-space copy).
func copyRange(ctx context.Context, dst, src *os.File, size int64) (done bool, err error) {
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	var off int64
	copied := false
	for off < size {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		start, end := off, size
		if data, err := unix.Seek(sfd, off, unix.SEEK_DATA); err == nil {
			start = min(data, size)
			if hole, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil {
				end = min(hole, size)
			}
		} else if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		for start < end {
			rin, rout := start, start
			n, err := unix.CopyFileRange(sfd, &rin, dfd, &rout, int(min(end-start, 1<<30)), 0)
			if err != nil {
				if !copied && fallbackErr(err) {
					return false, nil
				}
				return true, err
			}
			if n == 0 {
				return true, fmt.Errorf("copy_file_range at %d: %w", start, io.ErrUnexpectedEOF)
			}
			start += int64(n)
			copied = true
		}
		off = end
	}
	return true, dst.Truncate(size)
}

// fallbackErr tells copy_file_range errors that mean "not here, copy by
// hand" from real I/O errors.
func fallbackErr(err error) bool {
	for _, e := range []error{unix.ENOSYS, unix.EXDEV, unix.EOPNOTSUPP, unix.EINVAL, unix.EBADF, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// syncStore makes every dirty file of the store's filesystem durable with
// one syncfs(2) (which also reports writeback errors since Linux 5.8).
// names (temporary files of a batch) need no separate treatment here.
func syncStore(dir string, names []string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}
