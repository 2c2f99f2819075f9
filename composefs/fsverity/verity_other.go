//go:build !linux

package fsverity

import (
	"errors"
	"fmt"
	"os"
)

var errNoVerity = errors.New("fs-verity needs Linux")

// Enable would enable fs-verity on f; off Linux it returns ErrNotSupported.
func Enable(f *os.File, alg Algorithm) error {
	return opError("enable", f, ErrNotSupported, errNoVerity)
}

// MeasureAlgorithm would return the kernel's fs-verity digest of f; off
// Linux it returns ErrNotSupported.
func MeasureAlgorithm(f *os.File) (Algorithm, []byte, error) {
	return 0, nil, opError("measure", f, ErrNotSupported, errNoVerity)
}

// Supported reports ErrNotSupported off Linux.
func Supported(dir string) error {
	return fmt.Errorf("fs-verity probe %s: %w (%w)", dir, ErrNotSupported, errNoVerity)
}
