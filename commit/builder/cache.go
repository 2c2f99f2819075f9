package builder

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// FileCache is a composefs.EntryCache kept in a file between builds: for
// every regular file seen by the last build, keyed by (device, inode,
// size, mtime, ctime), its fs-verity digest or small content and its
// extended attributes. Save writes only the entries used or added by the
// current build, so the file tracks the tree and never grows without
// bound. A damaged cache file is ignored (everything is read again); a
// cache can make a build faster, never different.
//
// The file holds a table of the distinct xattr sets, then fixed-size
// records sorted by key, searched in place as they were read, so that
// opening the cache of a large tree costs one read and no index; then the
// digests of the last images written (image = f(dump, writer)), valid
// only for the executable that wrote them, identified by its inode and
// times; then the stamps of the object store's fan-out directories
// (objstore.Stamps) under which every object the records name was seen
// in the store.
//
// Those stamps spare an unchanged rebuild from looking for its objects:
// a build that used the store (Build calls useStore) gets Present on
// every digest entry whose fan-out directory still has its stamp, since
// nothing was removed from it since. A directory with a new stamp (an
// object added or removed) is looked at as usual. At the end of a
// successful build, seal takes new settled stamps and checks the objects
// of the directories that changed, so the saved stamps vouch for every
// saved record.
type FileCache struct {
	path string
	sets [][]composefs.Xattr // xattr sets of the file loaded
	recs []byte              // its records, recSize bytes each, sorted by key
	used []atomic.Uint32     // bit i: record i was looked up or re-added
	hits atomic.Int64

	mu    sync.Mutex
	added []cacheEntry // entries of this build not in the file loaded

	// images remembers the composefs images this very executable wrote
	// for dumps (newest first): an image is a function of its dump and
	// the writer, so an unchanged tree need not be written again.
	imagesMu sync.Mutex
	images   []imageMemo
	newImage *imageMemo

	stamps  *objstore.Stamps // loaded with the file (nil: none)
	trusted [256]bool        // fan-out directories whose stamp held at useStore
	sealed  *objstore.Stamps // taken by seal for Save
	vouched atomic.Int64     // lookups answered with Present
}

// imageMemo is one remembered image.
type imageMemo struct {
	dump  fsverity.Digest
	image commit.Image
}

// maxImages bounds the images remembered (a few refs built in turns).
const maxImages = 8

// imageMemoSize is the size of an image memo in the file: dump digest,
// image digest, size, format version.
const imageMemoSize = 32 + 32 + 8 + 4

// cacheEntry is a record being added.
type cacheEntry struct {
	rec    [recSize]byte // the record, xattr set field not yet assigned
	xattrs []composefs.Xattr
	known  bool // xattrs known (AddFile), else a digest only (Add)
}

var cacheMagic = []byte("cfs-file-cache-3\n")

// A record: the key, as the seven fields (dev, ino, size, mtime sec, nsec,
// ctime sec, nsec) in big-endian uint64 so that records sort bytewise; the
// xattr set as little-endian uint32 (0: not known, 1: none, i+2: set i of
// the table); the kind of payload (a digest or inline content) and the
// content length; padding; and 64 bytes of payload.
const (
	recSize     = 128
	recKeySize  = 56
	recSetOff   = 56
	recKindOff  = 60
	recLenOff   = 61
	recDataOff  = 64
	kindDigest  = 0
	kindContent = 1

	setUnknown = 0
	setNone    = 1
)

// OpenFileCache loads the cache at path (a missing, unreadable or damaged
// file gives an empty cache).
func OpenFileCache(path string) *FileCache {
	c := &FileCache{path: path}
	if b, err := os.ReadFile(path); err == nil {
		if sets, recs, images, stamps, err := parseCache(b, executableID()); err == nil {
			c.sets, c.recs, c.images, c.stamps = sets, recs, images, stamps
			c.used = make([]atomic.Uint32, (c.count()+31)/32)
		}
	}
	return c
}

// parseCache checks a cache file and returns its xattr sets, records,
// the images remembered for the writer exe and the store's stamps.
func parseCache(b []byte, exe string) (sets [][]composefs.Xattr, recs []byte, images []imageMemo, stamps *objstore.Stamps, err error) {
	if !bytes.HasPrefix(b, cacheMagic) {
		return nil, nil, nil, nil, errors.New("not a file cache")
	}
	b = b[len(cacheMagic):]
	bad := errors.New("damaged file cache")
	u32 := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.LittleEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := u32()
		if !ok || uint64(n) > uint64(len(b)) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	u64 := func() int64 {
		v := int64(binary.LittleEndian.Uint64(b))
		b = b[8:]
		return v
	}
	nsets, ok := u32()
	if !ok || uint64(nsets) > uint64(len(b))/4 {
		return nil, nil, nil, nil, bad
	}
	sets = make([][]composefs.Xattr, nsets)
	for i := range sets {
		nx, ok := u32()
		if !ok || uint64(nx) > uint64(len(b))/8 {
			return nil, nil, nil, nil, bad
		}
		set := make([]composefs.Xattr, nx)
		for j := range set {
			var ok1, ok2 bool
			set[j].Name, ok1 = str()
			set[j].Value, ok2 = str()
			if !ok1 || !ok2 {
				return nil, nil, nil, nil, bad
			}
		}
		sets[i] = set
	}
	if len(b) < 8 {
		return nil, nil, nil, nil, bad
	}
	n := binary.LittleEndian.Uint64(b)
	b = b[8:]
	if n > 1<<28 || uint64(len(b)) < n*recSize {
		return nil, nil, nil, nil, bad
	}
	recs = b[: n*recSize : n*recSize]
	b = b[n*recSize:]
	// The records are checked as they are used (a record out of order
	// can only be missed by the search, never found for a wrong key).
	writer, ok := str()
	nimg, ok2 := u32()
	if !ok || !ok2 || nimg > maxImages || uint64(len(b)) < uint64(nimg)*imageMemoSize {
		return nil, nil, nil, nil, bad
	}
	for range nimg {
		var m imageMemo
		copy(m.dump[:], b)
		copy(m.image.Digest[:], b[32:])
		m.image.Algorithm = "sha256"
		m.image.Size = int64(binary.LittleEndian.Uint64(b[64:]))
		m.image.FormatVersion = int(binary.LittleEndian.Uint32(b[72:]))
		b = b[imageMemoSize:]
		images = append(images, m)
	}
	if writer == "" || writer != exe {
		images = nil // written by another executable: worthless
	}
	nstamps, ok := u32()
	if !ok || nstamps != 0 && nstamps != 256 || uint64(len(b)) != uint64(nstamps)*stampSize {
		return nil, nil, nil, nil, bad
	}
	if nstamps == 256 {
		stamps = new(objstore.Stamps)
		for i := range stamps {
			stamps[i] = objstore.DirStamp{Dev: uint64(u64()), Ino: uint64(u64()), Size: u64(), Mtime: u64(), Ctime: u64()}
		}
	}
	return sets, recs, images, stamps, nil
}

// stampSize is the size of a fan-out directory's stamp in the file.
const stampSize = 5 * 8

func (c *FileCache) count() int { return len(c.recs) / recSize }

func putKey(r []byte, k composefs.FileKey) {
	for j, v := range []uint64{k.Dev, k.Ino, uint64(k.Size), uint64(k.MtimeSec), uint64(k.MtimeNsec), uint64(k.CtimeSec), uint64(k.CtimeNsec)} {
		binary.BigEndian.PutUint64(r[8*j:], v)
	}
}

// find returns the index of the record with key k, or -1.
func (c *FileCache) find(k composefs.FileKey) int {
	var key [recKeySize]byte
	putKey(key[:], k)
	n := c.count()
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(c.recs[m*recSize:m*recSize+recKeySize], key[:]) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < n && bytes.Equal(c.recs[lo*recSize:lo*recSize+recKeySize], key[:]) {
		return lo
	}
	return -1
}

func (c *FileCache) rec(i int) []byte { return c.recs[i*recSize : (i+1)*recSize] }

func (c *FileCache) markUsed(i int) { c.used[i/32].Or(1 << (i % 32)) }

func (c *FileCache) isUsed(i int) bool { return c.used[i/32].Load()&(1<<(i%32)) != 0 }

// entryOf decodes a record (in the file loaded or being added) with its
// xattrs.
func entryOf(r []byte, xattrs []composefs.Xattr) composefs.CachedFile {
	var f composefs.CachedFile
	if r[recKindOff] == kindContent {
		n := int(r[recLenOff])
		if n > 0 {
			f.Content = r[recDataOff : recDataOff+n : recDataOff+n]
		}
	} else {
		copy(f.Digest[:], r[recDataOff:])
	}
	f.Xattrs = xattrs
	return f
}

// xattrsOf returns the xattrs of record r and whether they are known.
func (c *FileCache) xattrsOf(r []byte) ([]composefs.Xattr, bool) {
	switch set := binary.LittleEndian.Uint32(r[recSetOff:]); set {
	case setUnknown:
		return nil, false
	case setNone:
		return nil, true
	default:
		return c.sets[set-2], true
	}
}

// valid checks the fields of a record of the file loaded.
func (c *FileCache) valid(r []byte) bool {
	set := binary.LittleEndian.Uint32(r[recSetOff:])
	return uint64(set) < uint64(len(c.sets))+2 && r[recKindOff] <= kindContent && r[recLenOff] <= composefs.InlineContentMax
}

// Lookup implements composefs.DigestCache: it answers from the file loaded.
func (c *FileCache) Lookup(k composefs.FileKey) (fsverity.Digest, bool) {
	i := c.find(k)
	if i < 0 || !c.valid(c.rec(i)) || c.rec(i)[recKindOff] != kindDigest {
		return fsverity.Digest{}, false
	}
	c.markUsed(i)
	c.hits.Add(1)
	return entryOf(c.rec(i), nil).Digest, true
}

// LookupFile implements composefs.EntryCache: it answers from the file
// loaded, for entries recorded with their xattrs.
func (c *FileCache) LookupFile(k composefs.FileKey) (composefs.CachedFile, bool) {
	i := c.find(k)
	if i < 0 || !c.valid(c.rec(i)) {
		return composefs.CachedFile{}, false
	}
	xs, known := c.xattrsOf(c.rec(i))
	if !known {
		return composefs.CachedFile{}, false
	}
	c.markUsed(i)
	c.hits.Add(1)
	f := entryOf(c.rec(i), xs)
	if r := c.rec(i); r[recKindOff] == kindDigest && c.trusted[r[recDataOff]] {
		f.Present = true
		c.vouched.Add(1)
	}
	return f, true
}

// Add implements composefs.DigestCache.
func (c *FileCache) Add(k composefs.FileKey, d fsverity.Digest) {
	var e cacheEntry
	putKey(e.rec[:], k)
	e.rec[recKindOff] = kindDigest
	copy(e.rec[recDataOff:], d[:])
	c.add(k, e)
}

// AddFile implements composefs.EntryCache. Content longer than
// composefs.InlineContentMax is not recorded.
func (c *FileCache) AddFile(k composefs.FileKey, f composefs.CachedFile) {
	if len(f.Content) > composefs.InlineContentMax {
		return
	}
	e := cacheEntry{known: true, xattrs: slices.Clone(f.Xattrs)}
	putKey(e.rec[:], k)
	if k.Size <= composefs.InlineContentMax {
		e.rec[recKindOff] = kindContent
		e.rec[recLenOff] = byte(len(f.Content))
		copy(e.rec[recDataOff:], f.Content)
	} else {
		e.rec[recKindOff] = kindDigest
		copy(e.rec[recDataOff:], f.Digest[:])
	}
	c.add(k, e)
}

// add records e unless the file loaded has the same entry, which is then
// kept. (Of several entries for one key, Save keeps the last added.)
func (c *FileCache) add(k composefs.FileKey, e cacheEntry) {
	if i := c.find(k); i >= 0 && c.valid(c.rec(i)) {
		r := c.rec(i)
		xs, known := c.xattrsOf(r)
		if bytes.Equal(r[recKindOff:recLenOff+1], e.rec[recKindOff:recLenOff+1]) &&
			bytes.Equal(r[recDataOff:], e.rec[recDataOff:]) &&
			(!e.known || known && slices.Equal(xs, e.xattrs)) {
			c.markUsed(i)
			return
		}
	}
	c.mu.Lock()
	c.added = append(c.added, e)
	c.mu.Unlock()
}

// Hits returns how many lookups were answered.
func (c *FileCache) Hits() int64 { return c.hits.Load() }

// Save writes the entries of this build atomically. When they are exactly
// the entries of the file loaded (an unchanged tree), the file is left as
// it is.
func (c *FileCache) Save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.count()
	keep := 0
	for i := range n {
		if c.isUsed(i) {
			keep++
		}
	}
	c.imagesMu.Lock()
	images := c.images
	if m := c.newImage; m != nil {
		images = []imageMemo{*m}
		for _, old := range c.images {
			if old.dump != m.dump && len(images) < maxImages {
				images = append(images, old)
			}
		}
	}
	imagesSame := slices.Equal(images, c.images)
	c.imagesMu.Unlock()
	// The stamps vouch for the records saved: the sealed ones, or
	// those loaded if no record was added (a subset of the records
	// they vouched for).
	stamps := c.sealed
	if stamps == nil && len(c.added) == 0 {
		stamps = c.stamps
	}
	stampsSame := stamps == c.stamps || stamps != nil && c.stamps != nil && *stamps == *c.stamps
	if keep == n && len(c.added) == 0 && c.recs != nil && imagesSame && stampsSame {
		return nil
	}
	// The entries used from the file, then those added (which replace
	// an entry of the file with the same key), sorted by key.
	entries := make([]cacheEntry, 0, keep+len(c.added))
	for i := range n {
		if !c.isUsed(i) || !c.valid(c.rec(i)) {
			continue
		}
		e := cacheEntry{}
		copy(e.rec[:], c.rec(i))
		e.xattrs, e.known = c.xattrsOf(e.rec[:])
		entries = append(entries, e)
	}
	entries = append(entries, c.added...)
	slices.SortStableFunc(entries, func(a, b cacheEntry) int {
		return bytes.Compare(a.rec[:recKeySize], b.rec[:recKeySize])
	})
	out := entries[:0]
	for i := range entries {
		if i+1 < len(entries) && bytes.Equal(entries[i].rec[:recKeySize], entries[i+1].rec[:recKeySize]) {
			continue // a later entry has the same key
		}
		out = append(out, entries[i])
	}
	entries = out
	// The distinct xattr sets, numbered in order of first use.
	var sets [][]composefs.Xattr
	index := map[string]uint32{}
	var key []byte
	for i := range entries {
		e := &entries[i]
		set := uint32(setUnknown)
		switch {
		case !e.known:
		case len(e.xattrs) == 0:
			set = setNone
		default:
			key = key[:0]
			for _, x := range e.xattrs {
				key = binary.LittleEndian.AppendUint32(key, uint32(len(x.Name)))
				key = append(key, x.Name...)
				key = binary.LittleEndian.AppendUint32(key, uint32(len(x.Value)))
				key = append(key, x.Value...)
			}
			id, ok := index[string(key)]
			if !ok {
				id = uint32(len(sets)) + 2
				index[string(key)] = id
				sets = append(sets, e.xattrs)
			}
			set = id
		}
		binary.LittleEndian.PutUint32(e.rec[recSetOff:], set)
	}

	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	f, err := atomicfile.New(c.path, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<16)
	w.Write(cacheMagic)
	var buf []byte
	buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(sets)))
	w.Write(buf)
	for _, set := range sets {
		buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(set)))
		for _, x := range set {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(x.Name)))
			buf = append(buf, x.Name...)
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(x.Value)))
			buf = append(buf, x.Value...)
		}
		w.Write(buf)
	}
	w.Write(binary.LittleEndian.AppendUint64(buf[:0], uint64(len(entries))))
	for i := range entries {
		w.Write(entries[i].rec[:])
	}
	exe := executableID()
	if exe == "" {
		images = nil
	}
	buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(exe)))
	buf = append(buf, exe...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(images)))
	for _, m := range images {
		buf = append(buf, m.dump[:]...)
		buf = append(buf, m.image.Digest[:]...)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(m.image.Size))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(m.image.FormatVersion))
	}
	if stamps == nil {
		buf = binary.LittleEndian.AppendUint32(buf, 0)
	} else {
		buf = binary.LittleEndian.AppendUint32(buf, 256)
		for _, st := range stamps {
			for _, v := range []uint64{st.Dev, st.Ino, uint64(st.Size), uint64(st.Mtime), uint64(st.Ctime)} {
				buf = binary.LittleEndian.AppendUint64(buf, v)
			}
		}
	}
	w.Write(buf)
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write file cache: %w", err)
	}
	return f.Commit()
}

// image returns the image this executable wrote for the dump, if it
// remembers one.
func (c *FileCache) image(dump fsverity.Digest) (commit.Image, bool) {
	c.imagesMu.Lock()
	defer c.imagesMu.Unlock()
	for _, m := range c.images {
		if m.dump == dump {
			return m.image, true
		}
	}
	return commit.Image{}, false
}

// rememberedImages reports whether any image is remembered.
func (c *FileCache) rememberedImages() bool {
	c.imagesMu.Lock()
	defer c.imagesMu.Unlock()
	return len(c.images) > 0
}

// setImage remembers the image of this build.
func (c *FileCache) setImage(dump fsverity.Digest, img commit.Image) {
	c.imagesMu.Lock()
	defer c.imagesMu.Unlock()
	c.newImage = &imageMemo{dump: dump, image: img}
}

// Vouched returns how many lookups were answered with Present.
func (c *FileCache) Vouched() int64 { return c.vouched.Load() }

// useStore prepares lookups for a build into store s: the fan-out
// directories whose stamps are those loaded are trusted. Call it before
// any lookup, under a lock that keeps objects from being removed
// during the build (the repository's GC lock).
func (c *FileCache) useStore(ctx context.Context, s *objstore.Store) error {
	c.trusted = [256]bool{}
	if c.stamps == nil {
		return nil
	}
	cur, err := s.CurrentStamps(ctx)
	if err != nil {
		return err // nothing trusted
	}
	for i := range cur {
		c.trusted[i] = c.stamps[i].Same(cur[i])
	}
	return nil
}

// seal takes the stamps Save records, once the build's objects are all
// in the store s and under the same lock as useStore: settled stamps
// first, then, for every directory whose stamp is not the one loaded, a
// check that the objects of the records to be saved are there. A
// directory failing the check gets no stamp (its objects are looked for
// next time).
func (c *FileCache) seal(ctx context.Context, s *objstore.Store) error {
	st, err := s.SettledStamps(ctx)
	if err != nil {
		return err
	}
	var check [256][]fsverity.Digest
	need := func(r []byte) {
		if r[recKindOff] != kindDigest {
			return
		}
		i := r[recDataOff]
		if st[i].IsZero() || c.stamps != nil && c.stamps[i].Same(st[i]) {
			return
		}
		check[i] = append(check[i], fsverity.Digest(r[recDataOff:recDataOff+32]))
	}
	for i := range c.count() {
		if c.isUsed(i) && c.valid(c.rec(i)) {
			need(c.rec(i))
		}
	}
	c.mu.Lock()
	for i := range c.added {
		need(c.added[i].rec[:])
	}
	c.mu.Unlock()

	next := make(chan int, 256)
	for i := range check {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := range next {
				err := s.CheckPresent(ctx, byte(i), check[i])
				if errors.Is(err, objstore.ErrObjectsMissing) {
					st[i] = objstore.DirStamp{}
					continue
				}
				if err != nil {
					errMu.Lock()
					firstErr = cmp.Or(firstErr, err)
					errMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	c.sealed = st
	return nil
}
