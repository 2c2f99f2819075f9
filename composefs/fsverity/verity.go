package fsverity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Errors of the kernel calls, for errors.Is. The returned errors also wrap
// the underlying errno and name the operation and the file.
var (
	// ErrNotSupported: the kernel or the filesystem has no fs-verity
	// (EOPNOTSUPP, ENOTTY), or refuses these parameters (EINVAL, e.g. a
	// filesystem block size other than 4096; ENOPKG, hash missing).
	ErrNotSupported = errors.New("fs-verity not supported by this kernel or filesystem")
	// ErrNotEnabled: the file has no fs-verity (ENODATA from measure).
	ErrNotEnabled = errors.New("fs-verity not enabled on file")
	// ErrAlreadyEnabled: enable on a file that already has fs-verity (EEXIST).
	ErrAlreadyEnabled = errors.New("fs-verity already enabled on file")
	// ErrAlgorithmMismatch: the kernel's digest uses another hash
	// algorithm than the one asked for.
	ErrAlgorithmMismatch = errors.New("fs-verity digest uses another hash algorithm")
)

// opError builds the error of a kernel call: "fs-verity OP PATH: CLASS (ERRNO)",
// wrapping both the class sentinel (if any) and the errno.
func opError(op string, f *os.File, class, errno error) error {
	if class == nil {
		return fmt.Errorf("fs-verity %s %s: %w", op, f.Name(), errno)
	}
	return fmt.Errorf("fs-verity %s %s: %w (%w)", op, f.Name(), class, errno)
}

// Measure returns the kernel's SHA-256 fs-verity digest of f
// (FS_IOC_MEASURE_VERITY). Errors match ErrNotSupported, ErrNotEnabled or
// ErrAlgorithmMismatch (the file's verity uses SHA-512).
func Measure(f *os.File) (Digest, error) {
	var d Digest
	err := measureInto(f, SHA256, d[:])
	return d, err
}

// Measure512 is Measure for files whose fs-verity uses SHA-512.
func Measure512(f *os.File) (Digest512, error) {
	var d Digest512
	err := measureInto(f, SHA512, d[:])
	return d, err
}

func measureInto(f *os.File, want Algorithm, dst []byte) error {
	alg, sum, err := MeasureAlgorithm(f)
	if err != nil {
		return err
	}
	if alg != want {
		return fmt.Errorf("fs-verity measure %s: %w: file has %v, want %v", f.Name(), ErrAlgorithmMismatch, alg, want)
	}
	copy(dst, sum)
	return nil
}

// MeasureOrCompute returns the SHA-256 fs-verity digest of f: the kernel's
// when f has fs-verity with SHA-256, otherwise computed in user space by
// reading f from offset 0 (f's own offset is not used or moved). kernel
// reports which of the two it was. Only errors other than "no verity
// here" (ErrNotSupported, ErrNotEnabled, ErrAlgorithmMismatch) from the
// kernel, and read errors, are returned.
func MeasureOrCompute(ctx context.Context, f *os.File) (d Digest, kernel bool, err error) {
	d, err = Measure(f)
	switch {
	case err == nil:
		return d, true, nil
	case errors.Is(err, ErrNotSupported), errors.Is(err, ErrNotEnabled), errors.Is(err, ErrAlgorithmMismatch):
	default:
		return Digest{}, false, err
	}
	h := NewHasher(SHA256)
	if _, err := h.readFrom(ctx, io.NewSectionReader(f, 0, math.MaxInt64)); err != nil {
		return Digest{}, false, fmt.Errorf("fs-verity digest %s: %w", f.Name(), err)
	}
	return h.Digest(), false, nil
}
