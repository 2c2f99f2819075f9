package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

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
	var st unix.Stat_t
	if err := unix.Fstat(int(dst.Fd()), &st); err != nil {
		return false, sum, &os.PathError{Op: "fstat", Path: dst.Name(), Err: err}
	}
	return copyToFD(ctx, int(dst.Fd()), st.Dev, src, size)
}

// noReflink holds the pairs of devices (source, destination) where FICLONE
// failed as unsupported, so that it is not tried for every file.
var noReflink sync.Map

type devPair struct{ src, dst uint64 }

// copyToFD is copyContent into the empty file open as dfd, on the device
// dstDev.
func copyToFD(ctx context.Context, dfd int, dstDev uint64, src *os.File, size int64) (hashed bool, sum fsverity.Digest, err error) {
	sfd := int(src.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return false, sum, &os.PathError{Op: "fstat", Path: src.Name(), Err: err}
	}
	if st.Size < size {
		return false, sum, fmt.Errorf("source has %d bytes, want %d: %w", st.Size, size, io.ErrUnexpectedEOF)
	}
	if forceUserCopy {
		sum, err = copyRW(ctx, fdWriter(dfd), src, size)
		return true, sum, err
	}
	if st.Size == size {
		devs := devPair{src: st.Dev, dst: dstDev}
		if _, no := noReflink.Load(devs); !no {
			err := unix.IoctlFileClone(dfd, sfd)
			if err == nil {
				return false, sum, nil
			}
			if reflinkUnsupported(err) {
				noReflink.Store(devs, struct{}{})
			}
		}
	}
	// Only a file with fewer blocks than its size can have holes worth
	// looking for.
	sparse := st.Blocks*512 < size
	done, err := copyRange(ctx, dfd, sfd, size, sparse)
	if done || err != nil {
		return false, sum, err
	}
	sum, err = copyRW(ctx, fdWriter(dfd), src, size)
	return true, sum, err
}

// reflinkUnsupported tells FICLONE errors that hold for the whole
// filesystem (no reflinks there, or not across these two) from others.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.ENOTTY, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// fdWriter is a raw descriptor as a fileWriter.
type fdWriter int

func (fd fdWriter) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(int(fd), p[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

func (fd fdWriter) Truncate(size int64) error { return unix.Ftruncate(int(fd), size) }

// copyRange copies with copy_file_range; for a sparse source extent by
// extent so that holes stay holes. done is false when the kernel or
// filesystem cannot do it (the caller falls back to a user-space copy).
func copyRange(ctx context.Context, dfd, sfd int, size int64, sparse bool) (done bool, err error) {
	var off int64
	copied := false
	for off < size {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		start, end := off, size
		if sparse {
			if data, err := unix.Seek(sfd, off, unix.SEEK_DATA); err == nil {
				start = min(data, size)
				if hole, err := unix.Seek(sfd, start, unix.SEEK_HOLE); err == nil {
					end = min(hole, size)
				}
			} else if errors.Is(err, unix.ENXIO) {
				break // only a hole remains
			}
		}
		for start < end {
			rin, rout := start, start
			n, err := unix.CopyFileRange(sfd, &rin, dfd, &rout, int(min(end-start, 1<<30)), 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
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
	if off == size && !sparse {
		return true, nil // written up to size: nothing to extend
	}
	return true, unix.Ftruncate(dfd, size)
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
