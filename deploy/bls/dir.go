package bls

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// EntriesDir is the directory of Type #1 entries relative to $BOOT.
const EntriesDir = "loader/entries"

// FileError is a file LoadDir could not read or parse.
type FileError struct {
	FileName string
	Err      error
}

func (e *FileError) Error() string { return e.FileName + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// LoadError lists the entry files LoadDir skipped. errors.Is and errors.As
// see through it to each file's error (e.g. ErrInvalid, *Error).
type LoadError struct {
	Dir   string
	Files []*FileError
}

func (e *LoadError) Error() string {
	parts := make([]string, len(e.Files))
	for i, f := range e.Files {
		parts[i] = f.Error()
	}
	return fmt.Sprintf("bls: %d unreadable entries in %s: %s", len(e.Files), e.Dir, strings.Join(parts, "; "))
}

// Unwrap returns the per-file errors.
func (e *LoadError) Unwrap() []error {
	errs := make([]error, len(e.Files))
	for i, f := range e.Files {
		errs[i] = f
	}
	return errs
}

// LoadDir reads every entry in boot/loader/entries, where boot is the root
// of a $BOOT partition, and returns them in Sort order. Like the boot
// loaders it considers regular files whose name ends in ".conf" (any case)
// and does not start with "."; other names, directories and symlinks are
// ignored.
//
// A file that cannot be read or parsed does not stop the others: LoadDir
// returns every entry it could parse and, if any file failed, a *LoadError
// naming them. A missing or unreadable directory is an error wrapping the
// underlying one (fs.ErrNotExist for a $BOOT without loader/entries).
func LoadDir(ctx context.Context, boot string) ([]LoadedEntry, error) {
	dir := filepath.Join(boot, EntriesDir)
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bls: read entries directory: %w", err)
	}
	var (
		out    []LoadedEntry
		failed []*FileError
	)
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bls: load %s: %w", dir, err)
		}
		name := de.Name()
		if strings.HasPrefix(name, ".") || len(name) <= len(Suffix) ||
			!strings.EqualFold(name[len(name)-len(Suffix):], Suffix) || !de.Type().IsRegular() {
			continue
		}
		e, err := readEntry(filepath.Join(dir, name))
		if err != nil {
			failed = append(failed, &FileError{FileName: name, Err: err})
			continue
		}
		out = append(out, LoadedEntry{FileName: name, Entry: e})
	}
	Sort(out)
	if len(failed) > 0 {
		return out, &LoadError{Dir: dir, Files: failed}
	}
	return out, nil
}

func readEntry(path string) (*Entry, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// WriteEntry validates e and atomically writes it as
// boot/loader/entries/fileName (temporary file, fsync, rename, directory
// fsync; see internal/atomicfile), creating loader/entries if needed (boot
// itself must exist). An existing file of that name is replaced. fileName
// must pass ValidFileName.
//
// Callers write the kernel and initrds the entry refers to first and the
// entry last ("payload first, entry last"), so that a crash never leaves
// an entry that points at missing files.
func WriteEntry(ctx context.Context, boot, fileName string, e *Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bls: write entry %s: %w", fileName, err)
	}
	if err := ValidFileName(fileName); err != nil {
		return err
	}
	if err := e.Validate(); err != nil {
		return err
	}
	dir := filepath.Join(boot, EntriesDir)
	if err := ensureDir(boot, dir); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, fileName), e.Marshal(), 0o644); err != nil {
		return fmt.Errorf("bls: write entry: %w", err)
	}
	return nil
}

// ensureDir creates dir (below boot, which must exist: a missing $BOOT
// usually means an unmounted partition, and writing to the directory
// below the mount point would be silently lost) if needed, and makes its
// creation durable by syncing every directory that gained an entry.
func ensureDir(boot, dir string) error {
	if fi, err := os.Stat(boot); err != nil {
		return fmt.Errorf("bls: boot partition: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("bls: boot partition %s is not a directory", boot)
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("bls: %s is not a directory", dir)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bls: %w", err)
	}
	// Remember which ancestors exist so that we know which parents to sync.
	var missing []string
	for d := dir; d != boot && d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bls: create %s: %w", dir, err)
	}
	for _, d := range missing {
		if err := atomicfile.SyncDir(filepath.Dir(d)); err != nil {
			return fmt.Errorf("bls: %w", err)
		}
	}
	return nil
}
