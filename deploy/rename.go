package deploy

import (
	"os"

	"golang.org/x/sys/unix"
)

// exchange atomically swaps the directory entries a and b
// (renameat2(RENAME_EXCHANGE)); both must exist.
func exchange(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "renameat2 RENAME_EXCHANGE", Old: a, New: b, Err: err}
	}
	return nil
}

// renameNoReplace renames a to b unless b exists.
func renameNoReplace(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "renameat2 RENAME_NOREPLACE", Old: a, New: b, Err: err}
	}
	return nil
}
