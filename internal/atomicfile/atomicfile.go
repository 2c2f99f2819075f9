// Package atomicfile publishes files atomically: the content goes to a
// temporary file in the destination directory, which is fsynced, renamed
// over the destination, and the directory fsynced, so that a crash leaves
// either the old file or the complete new one.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is a pending atomic write. Write to it, then Commit; Abort (or a
// failed Commit) removes the temporary file. Abort after Commit is a no-op,
// so `defer f.Abort()` is the idiom.
type File struct {
	*os.File
	dest string
	done bool
}

// New creates the temporary file for dest with the given permissions.
func New(dest string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", dest, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	return &File{File: tmp, dest: dest}, nil
}

// Commit fsyncs the data, renames it over the destination and fsyncs the
// directory.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already committed or aborted")
	}
	f.done = true
	name := f.File.Name()
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		os.Remove(name)
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(name, f.dest); err != nil {
		os.Remove(name)
		return fmt.Errorf("rename %s to %s: %w", name, f.dest, err)
	}
	return SyncDir(filepath.Dir(f.dest))
}

// Abort discards the temporary file unless the write was committed.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

// WriteFile atomically replaces dest with data.
func WriteFile(dest string, data []byte, perm os.FileMode) error {
	f, err := New(dest, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	return f.Commit()
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
