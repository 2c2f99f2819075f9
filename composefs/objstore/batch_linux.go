package objstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// dirHandle is an open directory of a batch (a fan-out directory).
type dirHandle struct {
	fd  int
	dev uint64 // its device
	ok  bool
}

func (h dirHandle) close() {
	if h.ok {
		unix.Close(h.fd)
	}
}

// openFan returns the descriptor of d's fan-out directory, opening it on
// first use; with create, a missing directory is created (not synced: the
// first sync of Flush makes it durable before anything in it is
// published). ok is false if it does not exist. The caller holds f.mu.
func (b *Batch) openFan(f *fanout, d fsverity.Digest, create bool) (fd int, ok bool, err error) {
	if f.dir.ok {
		return f.dir.fd, true, nil
	}
	p := b.fanPath(d)
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err = unix.Open(p, flags, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := b.s.ensureRoot(); err != nil {
			return -1, false, err
		}
		switch err := unix.Mkdir(p, uint32(DirMode)); {
		case err == nil:
			// Regardless of the umask.
			if err := unix.Chmod(p, uint32(DirMode)); err != nil {
				return -1, false, fmt.Errorf("object store: %w", &fs.PathError{Op: "chmod", Path: p, Err: err})
			}
		case !errors.Is(err, unix.EEXIST):
			return -1, false, fmt.Errorf("object store: %w", &fs.PathError{Op: "mkdir", Path: p, Err: err})
		}
		fd, err = unix.Open(p, flags, 0)
	}
	switch {
	case err == nil:
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, false, fmt.Errorf("object store: %w", &fs.PathError{Op: "fstat", Path: p, Err: err})
		}
		f.dir = dirHandle{fd: fd, dev: st.Dev, ok: true}
		return fd, true, nil
	case errors.Is(err, unix.ENOENT) && !create:
		return -1, false, nil
	}
	return -1, false, fmt.Errorf("object store: %w", &fs.PathError{Op: "open", Path: p, Err: err})
}

// statObject reports whether the object d exists, with one fstatat in its
// fan-out directory. The caller holds f.mu.
func (b *Batch) statObject(f *fanout, d fsverity.Digest) (bool, error) {
	fd, ok, err := b.openFan(f, d, false)
	if !ok || err != nil {
		return false, err
	}
	var st unix.Stat_t
	err = unix.Fstatat(fd, hex.EncodeToString(d[1:]), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("object store: %w", &fs.PathError{Op: "lstat", Path: b.s.Path(d), Err: err})
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return false, &CorruptObjectError{Path: b.s.Path(d), Digest: d, Reason: "not a regular file (" + fs.FileMode(st.Mode).Type().String() + ")"}
	}
	return true, nil
}

// stageFile copies the first size bytes of src into a new temporary file
// in d's fan-out directory, ready to be published as d once durable, and
// returns its name relative to the store.
func (b *Batch) stageFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest) (string, error) {
	f := &b.fan[d[0]]
	f.mu.Lock()
	dirfd, _, err := b.openFan(f, d, true)
	dev := f.dir.dev
	f.mu.Unlock()
	if err != nil {
		return "", err
	}
	fan := b.fanPath(d)
	fd, name, err := createTempAt(dirfd, fan)
	if err != nil {
		return "", err
	}
	path := filepath.Join(fan, name)
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if name != "" {
			unix.Unlinkat(dirfd, name, 0)
		}
	}()
	// The object mode regardless of the umask.
	if err := unix.Fchmod(fd, uint32(ObjectMode)); err != nil {
		return "", fmt.Errorf("object store: %w", &fs.PathError{Op: "chmod", Path: path, Err: err})
	}
	hashed, sum, err := copyToFD(ctx, fd, dev, src, size)
	if err != nil {
		return "", fmt.Errorf("object store: copy %s into %s: %w", src.Name(), path, err)
	}
	if hashed && sum != d {
		return "", fmt.Errorf("object store: insert %s as %s: %w (it has %s)", src.Name(), d, ErrDigestMismatch, sum)
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return "", fmt.Errorf("object store: %w", &fs.PathError{Op: "close", Path: path, Err: err})
	}
	if err := b.s.enableVerity(path, d); err != nil {
		return "", fmt.Errorf("object store: %w", err)
	}
	rel := hex.EncodeToString(d[:1]) + "/" + name
	name = "" // keep it
	return rel, nil
}

// createTempAt creates a new empty temporary file in the directory dirfd
// (named dir, for errors) and returns its descriptor and name.
func createTempAt(dirfd int, dir string) (int, string, error) {
	for try := 0; ; try++ {
		name := tempPrefix + strconv.FormatUint(rand.Uint64(), 36)
		fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(ObjectMode))
		if err == nil {
			return fd, name, nil
		}
		if !errors.Is(err, unix.EEXIST) || try == 100 {
			return -1, "", fmt.Errorf("object store: %w", &fs.PathError{Op: "create", Path: filepath.Join(dir, name), Err: err})
		}
	}
}

// publishStaged renames a staged copy to the object's name without
// replacing an existing object; if one appeared meanwhile it is verified
// and the copy dropped. It does not sync (Flush syncs the filesystem).
func (b *Batch) publishStaged(ctx context.Context, d fsverity.Digest, st staged) (bool, error) {
	tmp := filepath.Join(b.s.dir, st.name)
	f := &b.fan[d[0]]
	f.mu.Lock()
	dirfd, _, err := b.openFan(f, d, true)
	f.mu.Unlock()
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	oldfd, oldname := unix.AT_FDCWD, tmp
	if dir, base, ok := strings.Cut(st.name, "/"); ok && dir == hex.EncodeToString(d[:1]) {
		oldfd, oldname = dirfd, base // staged in the fan-out directory itself
	}
	err = unix.Renameat2(oldfd, oldname, dirfd, hex.EncodeToString(d[1:]), unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		b.s.written.Add(1)
		b.s.bytesWritten.Add(st.size)
		return true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		// No RENAME_NOREPLACE here: link and unlink.
		return b.s.publish(ctx, tmp, d, false)
	case errors.Is(err, unix.EEXIST):
		os.Remove(tmp)
		if ok, err := b.s.checkExisting(ctx, d); ok || err != nil {
			return false, err
		}
		return false, fmt.Errorf("object store: %s vanished while being inserted", b.s.Path(d))
	}
	os.Remove(tmp)
	return false, fmt.Errorf("object store: publish %s: %w", b.s.Path(d), &os.LinkError{Op: "rename", Old: tmp, New: b.s.Path(d), Err: err})
}

// readFanout calls fn for every entry of the directory p (not "." and
// ".."), with whether it is a regular file, reading the raw directory
// entries (no stat per entry unless the filesystem gives no type).
func readFanout(p string, fn func(name []byte, regular bool)) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "readdirent", Path: p, Err: err}
		}
		if n <= 0 {
			return nil
		}
		for rec := buf[:n]; len(rec) >= 19; {
			// struct linux_dirent64: ino u64, off s64, reclen u16,
			// type u8, name (NUL-terminated).
			reclen := int(binary.NativeEndian.Uint16(rec[16:]))
			if reclen < 19 || reclen > len(rec) {
				return &fs.PathError{Op: "readdirent", Path: p, Err: unix.EIO}
			}
			typ, name := rec[18], rec[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			rec = rec[reclen:]
			if string(name) == "." || string(name) == ".." {
				continue
			}
			regular := typ == unix.DT_REG
			if typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
					regular = st.Mode&unix.S_IFMT == unix.S_IFREG
				}
			}
			fn(name, regular)
		}
	}
}
