package composefs

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// BuildOptions configures BuildFromDir. The zero value builds like plain
// `mkcomposefs SRC IMG`.
type BuildOptions struct {
	// UseEpoch sets every mtime to 0.0 (mkcomposefs --use-epoch).
	UseEpoch bool
	// SkipXattrs reads no extended attributes (--skip-xattrs).
	SkipXattrs bool
	// UserXattrs reads only "user." attributes (--user-xattrs). It
	// conflicts with SkipXattrs.
	UserXattrs bool
	// SkipDevices leaves out character and block devices, overlay
	// whiteouts (char 0/0) included (--skip-devices).
	SkipDevices bool
	// Threads is the number of files hashed at once; 0 means
	// runtime.GOMAXPROCS(0). The directory walk runs beside them on as
	// many goroutines.
	Threads int
	// Store, if set, receives a copy of every file with external content
	// (size > 64 bytes) under its fs-verity digest (--digest-store). The
	// copies are published together (one filesystem sync) before
	// BuildFromDir returns.
	Store *objstore.Store
	// Batch, if set instead of Store, receives the copies; the caller
	// publishes them with Batch.Flush (e.g. together with other objects
	// of the same commit) or drops them with Batch.Abort, also when
	// BuildFromDir fails. Existence checks of objects come from its
	// listings of the store.
	Batch *objstore.Batch
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger
	// Progress, if set, is called from a single goroutine about ten
	// times a second while the build runs, and once at the end.
	Progress func(BuildProgress)
	// Cache, if set, supplies digests of files whose (device, inode,
	// size, mtime, ctime) are unchanged since an earlier build, so that
	// their content is not read again, and records the digests computed
	// now. With a Store or Batch, a cached digest is used only if its
	// object is present.
	Cache DigestCache
}

// FileKey identifies the state of a file's content the way a build cache
// can trust: a change of content changes size, mtime or ctime (ctime cannot
// be set by users), and a replaced file has another inode.
type FileKey struct {
	Dev, Ino  uint64
	Size      int64
	MtimeSec  int64
	MtimeNsec int64
	CtimeSec  int64
	CtimeNsec int64
}

// DigestCache maps file states to fs-verity digests. Implementations must
// be safe for concurrent use.
type DigestCache interface {
	Lookup(k FileKey) (fsverity.Digest, bool)
	Add(k FileKey, d fsverity.Digest)
}

// EntryCache is a DigestCache that also remembers the rest of what a
// build reads from a regular file: the content of a small file and the
// extended attributes. With one, an unchanged regular file costs a single
// lstat. The key covers the xattrs as it covers the content: setting or
// removing an xattr changes the file's ctime. BuildFromDir uses it (in
// place of Lookup and Add) when it reads all xattrs (neither SkipXattrs
// nor UserXattrs).
type EntryCache interface {
	DigestCache
	// LookupFile returns what was recorded for the file state k. The
	// caller may keep the returned slices but must not modify them.
	LookupFile(k FileKey) (CachedFile, bool)
	// AddFile records a regular file read in full.
	AddFile(k FileKey, f CachedFile)
}

// CachedFile is what an EntryCache records for a regular file.
type CachedFile struct {
	// Digest is the fs-verity digest of a file with external content
	// (more than InlineContentMax bytes).
	Digest fsverity.Digest
	// Content is the content of a file of 1..InlineContentMax bytes.
	Content []byte
	// Xattrs are all of the file's extended attributes, sorted by name.
	Xattrs []Xattr
	// Present, from LookupFile, vouches that the object of Digest is in
	// the object store the build writes to, so the builder need not look
	// for it. A cache may only say so when it knows that store.
	Present bool
}

// BuildProgress is a snapshot of a running BuildFromDir.
type BuildProgress struct {
	// Files and Bytes count regular files finished so far and the content
	// bytes read (hashed or inlined) so far.
	Files int64
	Bytes int64
	// Entries counts the entries of every type found so far.
	Entries int64
	// TotalFiles and TotalBytes count the regular files found so far and
	// their sizes; they are final once WalkDone is set.
	TotalFiles int64
	TotalBytes int64
	WalkDone   bool
}

// ErrBuildOptions classifies invalid BuildOptions.
var ErrBuildOptions = errors.New("invalid build options")

// ErrSourceChanged is returned when a file changed (size, mtime, ctime or
// identity) while the tree was being built, so its recorded metadata and
// digest could disagree with each other.
var ErrSourceChanged = errors.New("file changed while the tree was being built")

func (o *BuildOptions) validate() error {
	if o.SkipXattrs && o.UserXattrs {
		return fmt.Errorf("%w: SkipXattrs and UserXattrs conflict", ErrBuildOptions)
	}
	if o.Store != nil && o.Batch != nil && o.Batch.Store() != o.Store {
		return fmt.Errorf("%w: Batch of another store than Store", ErrBuildOptions)
	}
	if o.Threads < 0 {
		return fmt.Errorf("%w: negative Threads %d", ErrBuildOptions, o.Threads)
	}
	return nil
}

// inlineContent reports whether a regular file of the given size is stored
// inline in the image when built from a directory (1..64 bytes).
func inlineContent(size int64) bool {
	return size > 0 && size <= InlineContentMax
}
