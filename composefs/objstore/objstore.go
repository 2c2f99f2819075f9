// Package objstore is the content-addressed object store of composefs, laid
// out as `mkcomposefs --digest-store=DIR` writes it: every object is a
// regular file named after the fs-verity SHA-256 digest of its content,
// DIR/ab/cdef… (two hex characters, a slash, the other 62), directories
// mode 0755, objects mode 0644. Mounted composefs images find their file
// content there (overlayfs data-only lower layer).
//
// Objects are published atomically (temporary file in the store, fsync,
// no-clobber rename, directory fsync) and an object that already exists is
// re-verified by Insert and InsertFile, never trusted. A Batch
// (Store.Batch) inserts many objects with one filesystem sync instead of
// one fsync per object, and answers existence checks from listings of the
// fan-out directories; its Has and Insert trust an existing object (as
// Has does), leaving re-hashing to fsck. A Store is safe for concurrent
// use by many goroutines and by several processes sharing the directory.
package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// Modes of the store's directories and objects (fixed, as upstream).
const (
	DirMode    fs.FileMode = 0o755
	ObjectMode fs.FileMode = 0o644
)

// tempPrefix starts the names of temporary files, which live in the store's
// top directory and so never look like objects.
const tempPrefix = ".tmp-"

// ErrCorrupt classifies *CorruptObjectError.
var ErrCorrupt = errors.New("corrupt object in store")

// ErrDigestMismatch is returned when content handed to InsertFile turns out
// not to have the digest the caller named.
var ErrDigestMismatch = errors.New("content does not match its digest")

// CorruptObjectError reports an object whose content does not match its
// name (Found holds the digest it really has), or a store entry that is not
// a regular file (Reason says so; Found is zero).
type CorruptObjectError struct {
	Path   string
	Digest fsverity.Digest
	Found  fsverity.Digest
	Reason string
}

func (e *CorruptObjectError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("corrupt object %s: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("corrupt object %s: content has fs-verity digest %s", e.Path, e.Found)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptObjectError) Unwrap() error { return ErrCorrupt }

// Store is an object store directory. The directory is created on the
// first insert (an empty store leaves nothing on disk, as upstream).
type Store struct {
	dir string
	// dirs caches the fan-out directories ("ab") known to exist.
	dirs sync.Map
	// written and bytesWritten count objects this Store value published.
	written, bytesWritten atomic.Int64
	// noVerity is set once enabling fs-verity failed as unsupported:
	// the store's filesystem has none, so later objects do not try.
	noVerity atomic.Bool
}

// Stats counts the objects a Store value has written since it was opened.
type Stats struct {
	Written      int64 // objects newly published
	BytesWritten int64 // their total size
}

// Stats returns the objects written so far through s.
func (s *Store) Stats() Stats {
	return Stats{Written: s.written.Load(), BytesWritten: s.bytesWritten.Load()}
}

// Open opens the object with digest d for reading, never following a
// symlink in its place. It does not verify the content.
func (s *Store) Open(d fsverity.Digest) (*os.File, error) {
	f, err := openObject(s.Path(d))
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	return f, nil
}

// Open returns the store at dir. The directory need not exist yet; if it
// does, it must be a directory.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("object store: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	switch {
	case err == nil:
		if !st.IsDir() {
			return nil, fmt.Errorf("object store %s: not a directory", abs)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("object store: %w", err)
	}
	return &Store{dir: abs}, nil
}

// Dir returns the store's directory (absolute).
func (s *Store) Dir() string { return s.dir }

// Path returns the file name of the object with digest d.
func (s *Store) Path(d fsverity.Digest) string {
	return filepath.Join(s.dir, d.ObjectPath())
}

// Has reports whether the object exists. It does not verify its content
// (Verify does); an entry that is not a regular file is a
// *CorruptObjectError.
func (s *Store) Has(ctx context.Context, d fsverity.Digest) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	p := s.Path(d)
	st, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("object store: %w", err)
	case !st.Mode().IsRegular():
		return false, &CorruptObjectError{Path: p, Digest: d, Reason: "not a regular file (" + st.Mode().Type().String() + ")"}
	}
	return true, nil
}

// Verify checks that the object exists and has digest d: the kernel's
// fs-verity measurement if the object has fs-verity, else its content
// hashed in user space. A mismatch is a *CorruptObjectError; a missing
// object matches errors.Is(err, fs.ErrNotExist).
func (s *Store) Verify(ctx context.Context, d fsverity.Digest) error {
	p := s.Path(d)
	f, err := openObject(p)
	if err != nil {
		return fmt.Errorf("verify object: %w", err)
	}
	defer f.Close()
	return verifyOpen(ctx, f, p, d)
}

// verifyOpen checks an open object file against d.
func verifyOpen(ctx context.Context, f *os.File, p string, d fsverity.Digest) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("verify object: %w", err)
	}
	if !st.Mode().IsRegular() {
		return &CorruptObjectError{Path: p, Digest: d, Reason: "not a regular file (" + st.Mode().Type().String() + ")"}
	}
	found, err := digestOf(ctx, f)
	if err != nil {
		return fmt.Errorf("verify object %s: %w", p, err)
	}
	if found != d {
		return &CorruptObjectError{Path: p, Digest: d, Found: found}
	}
	return nil
}

// checkExisting reports whether the object exists, verifying it if so.
func (s *Store) checkExisting(ctx context.Context, d fsverity.Digest) (bool, error) {
	p := s.Path(d)
	f, err := openObject(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		if isSymlinkErr(err) {
			return false, &CorruptObjectError{Path: p, Digest: d, Reason: "not a regular file (symlink)"}
		}
		return false, fmt.Errorf("object store: %w", err)
	}
	defer f.Close()
	if err := verifyOpen(ctx, f, p, d); err != nil {
		return false, err
	}
	return true, nil
}

// InsertFile adds the first size bytes of src as the object d, which the
// caller has computed as their fs-verity digest. It reports whether it
// wrote a new object. If the object exists it is verified instead (a
// mismatch is a *CorruptObjectError, never silently accepted).
//
// The copy is made without passing the data through user space when the
// filesystem allows: a reflink (FICLONE), else copy_file_range over the
// data extents of src (holes stay holes), else a read/write loop, which
// also re-hashes the data and refuses a mismatch with d. When fs-verity
// can be enabled on the new object, the kernel's measurement is checked
// against d as well. src is read with positional I/O from offset 0; its
// file offset may change.
func (s *Store) InsertFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest) (written bool, err error) {
	name, exists, err := s.prepareFile(ctx, src, size, d, true)
	if exists || err != nil {
		return false, err
	}
	return s.publish(ctx, name, d, true)
}

// prepareFile checks for an existing object d (exists) and otherwise
// copies src into a finished temporary file, fsynced if durable, and
// returns its name.
func (s *Store) prepareFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest, durable bool) (name string, exists bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	if ok, err := s.checkExisting(ctx, d); ok || err != nil {
		return "", ok, err
	}
	// The digest is known: stage the copy in its fan-out directory, so
	// that concurrent inserts do not all create files in one directory
	// (ext4 serialises creations per directory).
	tmp, err := s.createTempIn(d)
	if err != nil {
		return "", false, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	hashed, sum, err := copyContent(ctx, tmp, src, size)
	if err != nil {
		return "", false, fmt.Errorf("object store: copy %s into %s: %w", src.Name(), tmp.Name(), err)
	}
	if hashed && sum != d {
		return "", false, fmt.Errorf("object store: insert %s as %s: %w (it has %s)", src.Name(), d, ErrDigestMismatch, sum)
	}
	name = tmp.Name()
	if err := s.finish(tmp, d, durable); err != nil {
		return "", false, err
	}
	tmp = nil
	return name, false, nil
}

// Insert stores everything r yields as a new object, hashing it while it
// is written to a temporary file, and returns its digest and size. If the
// object already exists it is verified and the new copy dropped.
func (s *Store) Insert(ctx context.Context, r io.Reader) (fsverity.Digest, int64, error) {
	if err := ctx.Err(); err != nil {
		return fsverity.Digest{}, 0, err
	}
	tmp, err := s.createTemp()
	if err != nil {
		return fsverity.Digest{}, 0, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	hs := getHashState()
	n, err := writeSparse(ctx, tmp, r, hs.h, hs.buf)
	d := hs.h.Digest()
	putHashState(hs)
	if err != nil {
		return fsverity.Digest{}, n, fmt.Errorf("object store: write %s: %w", tmp.Name(), err)
	}
	name := tmp.Name()
	if ok, err := s.checkExisting(ctx, d); ok || err != nil {
		return d, n, err
	}
	if err := s.finish(tmp, d, true); err != nil {
		return d, n, err
	}
	tmp = nil
	if _, err := s.publish(ctx, name, d, true); err != nil {
		return d, n, err
	}
	return d, n, nil
}

// createTemp creates a temporary file in the store's top directory,
// creating that directory if needed.
// createTempIn creates a temporary file in the fan-out directory of d.
func (s *Store) createTempIn(d fsverity.Digest) (*os.File, error) {
	if err := s.ensureFanout(d); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, d.String()[:2]), tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	return f, nil
}

func (s *Store) createTemp() (*os.File, error) {
	if err := s.ensureRoot(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	return f, nil
}

// finish sets the object mode, makes the data durable (if durable; a
// batch syncs the whole filesystem at once instead), closes the file, and
// tries to enable fs-verity on it; when that works, the kernel's
// measurement must equal d. On error the file is removed.
func (s *Store) finish(f *os.File, d fsverity.Digest, durable bool) error {
	name := f.Name()
	err := f.Chmod(ObjectMode)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.enableVerity(name, d)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// enableVerity enables fs-verity (SHA-256, 4096-byte blocks, no salt) on
// the closed file name and checks the kernel's measurement against d.
// Filesystems without fs-verity are not an error (and, once seen, not
// tried again).
func (s *Store) enableVerity(name string, d fsverity.Digest) error {
	if s.noVerity.Load() {
		return nil
	}
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	err = fsverity.Enable(f, fsverity.SHA256)
	switch {
	case errors.Is(err, fsverity.ErrNotSupported):
		s.noVerity.Store(true)
		return nil
	case err != nil && !errors.Is(err, fsverity.ErrAlreadyEnabled):
		return err
	}
	got, err := fsverity.Measure(f)
	if err != nil {
		return err
	}
	if got != d {
		return fmt.Errorf("new object %s: %w (kernel measures %s, want %s)", name, ErrDigestMismatch, got, d)
	}
	return nil
}

// publish renames the finished temporary file to the object's name without
// replacing an existing object; if one appeared meanwhile it is verified
// and the temporary file dropped. The object's directory is fsynced if
// syncDir (a batch syncs the filesystem once instead).
func (s *Store) publish(ctx context.Context, tmp string, d fsverity.Digest, syncDir bool) (bool, error) {
	dst := s.Path(d)
	for attempt := 0; ; attempt++ {
		if err := s.ensureFanout(d); err != nil {
			os.Remove(tmp)
			return false, err
		}
		err := renameNoReplace(tmp, dst)
		switch {
		case err == nil:
			s.written.Add(1)
			if st, err := os.Lstat(dst); err == nil {
				s.bytesWritten.Add(st.Size())
			}
			if !syncDir {
				return true, nil
			}
			if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
				return true, fmt.Errorf("object store: %w", err)
			}
			return true, nil
		case errors.Is(err, fs.ErrExist):
			os.Remove(tmp)
			if ok, err := s.checkExisting(ctx, d); ok || err != nil {
				return false, err
			}
			// Removed again between the rename and the check: the
			// content is gone with our temporary file; report it.
			return false, fmt.Errorf("object store: %s vanished while being inserted", dst)
		case errors.Is(err, fs.ErrNotExist) && attempt == 0:
			// The fan-out directory was pruned by someone else after
			// we cached it: create it again.
			s.dirs.Delete(d.String()[:2])
		default:
			os.Remove(tmp)
			return false, fmt.Errorf("object store: publish %s: %w", dst, err)
		}
	}
}

// ensureRoot creates the store directory (and its parents) if needed.
func (s *Store) ensureRoot() error {
	if _, ok := s.dirs.Load(""); ok {
		return nil
	}
	if err := mkdirDurable(s.dir, true); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	s.dirs.Store("", struct{}{})
	return nil
}

// ensureFanout creates DIR/ab for the digest if needed.
func (s *Store) ensureFanout(d fsverity.Digest) error {
	prefix := d.String()[:2]
	if _, ok := s.dirs.Load(prefix); ok {
		return nil
	}
	if err := s.ensureRoot(); err != nil {
		return err
	}
	if err := mkdirDurable(filepath.Join(s.dir, prefix), false); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	s.dirs.Store(prefix, struct{}{})
	return nil
}

// mkdirDurable creates dir with DirMode (regardless of the umask) and
// fsyncs its parent; an existing directory is fine. With parents, missing
// parents are created too.
func mkdirDurable(dir string, parents bool) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	if parents {
		if err := mkdirDurable(filepath.Dir(dir), true); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, DirMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	if err := os.Chmod(dir, DirMode); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}

// Remove deletes the object d (for pruning). A missing object matches
// errors.Is(err, fs.ErrNotExist). Empty fan-out directories are kept:
// removing them would race with concurrent inserts.
func (s *Store) Remove(d fsverity.Digest) error {
	if err := os.Remove(s.Path(d)); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// Walk calls fn for every object in the store, in digest order. Entries
// that are not named like objects (temporary files, anything else) are
// skipped. A missing store directory has no objects. Walk does not verify
// content.
func (s *Store) Walk(ctx context.Context, fn func(d fsverity.Digest) error) error {
	top, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	for _, e := range top {
		if !e.IsDir() || len(e.Name()) != 2 || !isLowerHex(e.Name()) {
			continue
		}
		sub := filepath.Join(s.dir, e.Name())
		names, err := readNames(sub)
		if err != nil {
			return fmt.Errorf("object store: %w", err)
		}
		for _, name := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(name) != 62 || !isLowerHex(name) {
				continue
			}
			d, err := fsverity.ParseDigest(e.Name() + name)
			if err != nil {
				continue
			}
			if err := fn(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// readNames returns the sorted names in dir.
func readNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// forceUserCopy makes InsertFile skip the kernel copy methods (tests).
var forceUserCopy = false

// bufSize is the size of pooled read buffers: a multiple of the fs-verity
// block size, so whole blocks are hashed in place.
const bufSize = 32 * fsverity.BlockSize

// hashState is a reusable hasher with its read buffer.
type hashState struct {
	h   *fsverity.Hasher
	buf []byte
}

var hashPool = sync.Pool{New: func() any {
	return &hashState{h: fsverity.NewHasher(fsverity.SHA256), buf: make([]byte, bufSize)}
}}

func getHashState() *hashState {
	hs := hashPool.Get().(*hashState)
	hs.h.Reset()
	return hs
}

func putHashState(hs *hashState) { hashPool.Put(hs) }

// digestOf returns the SHA-256 fs-verity digest of f: the kernel's
// measurement if f has fs-verity, else computed from f's content (read
// with positional I/O from offset 0).
func digestOf(ctx context.Context, f *os.File) (fsverity.Digest, error) {
	d, err := fsverity.Measure(f)
	switch {
	case err == nil:
		return d, nil
	case errors.Is(err, fsverity.ErrNotSupported), errors.Is(err, fsverity.ErrNotEnabled), errors.Is(err, fsverity.ErrAlgorithmMismatch):
	default:
		return fsverity.Digest{}, err
	}
	hs := getHashState()
	defer putHashState(hs)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return fsverity.Digest{}, err
		}
		n, err := f.ReadAt(hs.buf, off)
		hs.h.Write(hs.buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return hs.h.Digest(), nil
		}
		if err != nil {
			return fsverity.Digest{}, err
		}
	}
}

var zeroBlock [fsverity.BlockSize]byte

// fileWriter is where writeSparse writes: an *os.File or a raw descriptor.
type fileWriter interface {
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
}

// writeSparse copies r into f through buf, hashing everything into h, and
// leaves all-zero 4096-byte blocks as holes. It returns the number of
// bytes.
func writeSparse(ctx context.Context, f fileWriter, r io.Reader, h *fsverity.Hasher, buf []byte) (int64, error) {
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		// Fill the buffer; only a plain io.EOF from r ends the object. A
		// reader's own io.ErrUnexpectedEOF (a truncated stream) is an
		// error, never the end of the content.
		n, rerr := 0, error(nil)
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = r.Read(buf[n:])
			n += m
		}
		if n > 0 {
			h.Write(buf[:n])
			if err := writeNonZero(f, buf[:n], off); err != nil {
				return off, err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if err := f.Truncate(off); err != nil {
		return off, err
	}
	return off, nil
}

// writeNonZero writes p at off, skipping whole blocks of zeros (the file
// is truncated to its final size afterwards, which turns them into holes).
func writeNonZero(f fileWriter, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), fsverity.BlockSize)
		if n == fsverity.BlockSize && bytes.Equal(p[:n], zeroBlock[:]) {
			p, off = p[n:], off+int64(n)
			continue
		}
		// Coalesce the following non-zero blocks into one write.
		for n < len(p) {
			m := min(len(p)-n, fsverity.BlockSize)
			if m == fsverity.BlockSize && bytes.Equal(p[n:n+m], zeroBlock[:]) {
				break
			}
			n += m
		}
		if _, err := f.WriteAt(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// copyRW copies size bytes of src from offset 0 into dst with pread/pwrite,
// hashing them, keeping zero blocks sparse. It returns the digest.
func copyRW(ctx context.Context, dst fileWriter, src *os.File, size int64) (fsverity.Digest, error) {
	if err := dst.Truncate(0); err != nil {
		return fsverity.Digest{}, err
	}
	hs := getHashState()
	defer putHashState(hs)
	n, err := writeSparse(ctx, dst, io.NewSectionReader(src, 0, size), hs.h, hs.buf)
	if err != nil {
		return fsverity.Digest{}, err
	}
	if n != size {
		return fsverity.Digest{}, fmt.Errorf("source has %d bytes, want %d: %w", n, size, io.ErrUnexpectedEOF)
	}
	return hs.h.Digest(), nil
}
