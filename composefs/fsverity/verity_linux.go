//go:build linux

package fsverity

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl runs one ioctl on f's descriptor without switching f to blocking
// mode (as f.Fd would).
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Enable enables fs-verity on f (FS_IOC_ENABLE_VERITY) with alg, 4096-byte
// Merkle blocks and no salt. The kernel reads the whole file to build the
// tree; f must be open read-only and nobody may have the file open for
// writing. Errors match ErrNotSupported (EOPNOTSUPP, ENOTTY, EINVAL,
// ENOPKG) or ErrAlreadyEnabled (EEXIST), and wrap the errno.
func Enable(f *os.File, alg Algorithm) error {
	arg := unix.FsverityEnableArg{
		Version:        1,
		Hash_algorithm: uint32(alg),
		Block_size:     BlockSize,
	}
	err := ioctl(f, unix.FS_IOC_ENABLE_VERITY, unsafe.Pointer(&arg))
	if err == nil {
		return nil
	}
	var class error
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOPKG):
		class = ErrNotSupported
	case errors.Is(err, unix.EEXIST):
		class = ErrAlreadyEnabled
	}
	return opError("enable", f, class, err)
}

// measureArg is struct fsverity_digest with room for the largest digest.
type measureArg struct {
	alg    uint16
	size   uint16
	digest [64]byte
}

// MeasureAlgorithm returns the kernel's fs-verity digest of f
// (FS_IOC_MEASURE_VERITY) and its hash algorithm. Errors match
// ErrNotEnabled (ENODATA) or ErrNotSupported (EOPNOTSUPP, ENOTTY, EINVAL).
func MeasureAlgorithm(f *os.File) (Algorithm, []byte, error) {
	arg := measureArg{size: uint16(len(measureArg{}.digest))}
	err := ioctl(f, unix.FS_IOC_MEASURE_VERITY, unsafe.Pointer(&arg))
	if err != nil {
		var class error
		switch {
		case errors.Is(err, unix.ENODATA):
			class = ErrNotEnabled
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EINVAL):
			class = ErrNotSupported
		}
		return 0, nil, opError("measure", f, class, err)
	}
	alg := Algorithm(arg.alg)
	if alg.Size() == 0 || int(arg.size) != alg.Size() {
		return 0, nil, fmt.Errorf("fs-verity measure %s: kernel returned algorithm %d with a %d-byte digest", f.Name(), arg.alg, arg.size)
	}
	return alg, append([]byte(nil), arg.digest[:arg.size]...), nil
}

// Supported probes whether files in dir can get fs-verity: it creates a
// small temporary file there, enables SHA-256 verity on it and removes it.
// It returns nil if that worked, an error matching ErrNotSupported if the
// kernel or filesystem lacks fs-verity, or another error (e.g. dir not
// writable).
func Supported(dir string) (err error) {
	w, err := os.CreateTemp(dir, ".fsverity-probe-*")
	if err != nil {
		return fmt.Errorf("fs-verity probe: %w", err)
	}
	name := w.Name()
	defer func() {
		if rerr := os.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("fs-verity probe: %w", rerr)
		}
	}()
	_, werr := w.Write([]byte{0})
	if cerr := w.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("fs-verity probe: %w", werr)
	}
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("fs-verity probe: %w", err)
	}
	defer f.Close()
	return Enable(f, SHA256)
}
