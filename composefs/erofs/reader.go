package erofs

// This file holds the reader: it parses a composefs EROFS image into a
// composefs tree exactly as upstream `composefs-info` reconstructs it
// (spec §12; upstream lcfs_load_node_from_image_ext and helpers).
//
// The reader runs on untrusted images. Every offset, count and size read
// from the image is checked against the image size before use, nothing is
// allocated from an untrusted length without a bound, and the amount of
// work is bounded by the image size (see the reader limits below).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// ErrCorrupt classifies every error about a malformed image: bad magic, an
// offset outside the image, a directory loop, an impossible size.
var ErrCorrupt = errors.New("corrupt composefs image")

// ErrUnsupported classifies images that may be valid EROFS but use
// something this reader does not implement (another composefs header
// version, compression, another block size, unknown incompatible
// features).
var ErrUnsupported = errors.New("unsupported composefs image")

// FormatError details an ErrCorrupt or ErrUnsupported: where in the image
// and in the tree the problem was found, and what it is.
type FormatError struct {
	// Offset is the byte offset in the image the problem is about, or -1.
	Offset int64
	// Path is the path of the entry being read, if known ("/" is the
	// root).
	Path string
	Msg  string
	// Err is ErrCorrupt or ErrUnsupported; nil means ErrCorrupt.
	Err error
}

func (e *FormatError) Error() string {
	var b strings.Builder
	if errors.Is(e.kind(), ErrUnsupported) {
		b.WriteString("unsupported composefs image")
	} else {
		b.WriteString("corrupt composefs image")
	}
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(e.Path)
	}
	if e.Offset >= 0 {
		fmt.Fprintf(&b, ": at offset %d", e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *FormatError) kind() error {
	if e.Err == nil {
		return ErrCorrupt
	}
	return e.Err
}

// Unwrap makes errors.Is(err, ErrCorrupt) (or ErrUnsupported) true.
func (e *FormatError) Unwrap() error { return e.kind() }

func rdCorruptf(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func rdUnsupportedf(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

// rdWithPath prepends a path component to the Path of a FormatError
// as the error travels up the directory recursion.
func rdWithPath(err error, name string) error {
	var fe *FormatError
	if errors.As(err, &fe) {
		if fe.Path == "" || fe.Path == "/" {
			fe.Path = "/" + name
		} else {
			fe.Path = "/" + name + fe.Path
		}
	}
	return err
}

// Reader limits. Valid images stay far below them; they exist so that a
// hostile image cannot make the reader recurse, loop or allocate without
// bound.
const (
	// readerMaxDepth bounds the directory nesting (a path of that many
	// components is far beyond PATH_MAX).
	readerMaxDepth = 4096
	// readerMaxDirBlock is the largest directory block (the EROFS block).
	readerMaxDirBlock = BlockSize
	// readerXattrIndexLimit is the number of known xattr name indexes
	// (0..6); long-prefix indexes (bit 7) are not supported.
	readerXattrIndexLimit = 7
	// readerFeatureIncompatChunkedFile is EROFS_FEATURE_INCOMPAT_CHUNKED_FILE,
	// the only incompatible feature the reader tolerates.
	readerFeatureIncompatChunkedFile = 0x4
	// readerMetacopySize is the size of a trusted.overlay.metacopy value
	// that carries a digest (4-byte header + SHA-256).
	readerMetacopySize = 4 + 32
	// readerCacheSlots is the number of image blocks kept in the block
	// cache (direct mapped).
	readerCacheSlots = 64
)

// ImageHeader is the 32-byte composefs header at offset 0 (spec §11).
type ImageHeader struct {
	Magic   uint32
	Version uint32 // LCFS_EROFS_VERSION, always 1
	Flags   uint32 // FlagHasACL
	// ComposefsVersion is the composefs format version the image was
	// written with (0 or 1, spec §4).
	ComposefsVersion uint32
}

// HasACL reports whether the image has POSIX ACLs (mounts need acl
// support then).
func (h ImageHeader) HasACL() bool { return h.Flags&FlagHasACL != 0 }

// ImageSuperblock is the EROFS superblock at offset 1024 (spec §11).
type ImageSuperblock struct {
	Magic           uint32
	Checksum        uint32
	FeatureCompat   uint32
	BlkSzBits       uint8
	ExtSlots        uint8
	RootNid         uint16
	Inos            uint64
	BuildTime       uint64
	BuildTimeNsec   uint32
	Blocks          uint32
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	UUID            [16]byte
	VolumeName      [16]byte
	FeatureIncompat uint32
	DirBlkBits      uint8
}

// Image is an opened composefs EROFS image whose header and superblock
// have been checked. It reads the rest lazily. An Image is not safe for
// concurrent use.
type Image struct {
	Header     ImageHeader
	Superblock ImageSuperblock

	br        rdBlockReader
	limit     int64 // bytes of the image that may be read: Blocks*4096
	metaBase  int64 // byte offset of nid 0
	xattrBase int64 // byte offset of shared xattr id 0
}

// Read parses a composefs EROFS image into a composefs tree exactly as
// composefs-info reconstructs it (spec §12). size is the image size in
// bytes. Errors about the image content match ErrCorrupt or
// ErrUnsupported; errors from r are returned wrapped.
func Read(r io.ReaderAt, size int64) (*composefs.Node, error) {
	im, err := Open(r, size)
	if err != nil {
		return nil, err
	}
	return im.Tree()
}

// ReadFile reads the composefs image at path (see Read).
func ReadFile(path string) (*composefs.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	root, err := Read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return root, nil
}

// Objects returns the object paths (payloads of external regular files)
// an image references, sorted and distinct, as `composefs-info objects`
// prints them. It walks the image without building the tree.
func Objects(r io.ReaderAt, size int64) ([]string, error) {
	im, err := Open(r, size)
	if err != nil {
		return nil, err
	}
	return im.Objects()
}

// Open checks the composefs header and the EROFS superblock of an image
// of size bytes and returns the Image for reading it.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	if size < BlockSize {
		return nil, rdCorruptf(-1, "image of %d bytes is shorter than one block", size)
	}
	var buf [SuperblockOffset + SuperblockSize]byte
	if err := rdReadFull(r, buf[:], 0); err != nil {
		return nil, err
	}
	rdLE := binary.LittleEndian
	im := &Image{}
	h := &im.Header
	h.Magic = rdLE.Uint32(buf[0:])
	h.Version = rdLE.Uint32(buf[4:])
	h.Flags = rdLE.Uint32(buf[8:])
	h.ComposefsVersion = rdLE.Uint32(buf[12:])
	if h.Magic != ComposefsMagic {
		return nil, rdCorruptf(0, "bad composefs magic %#08x (want %#08x)", h.Magic, ComposefsMagic)
	}
	if h.Version != ComposefsVersion {
		return nil, rdUnsupportedf(4, "composefs header version %d (only %d is supported)", h.Version, ComposefsVersion)
	}

	s := buf[SuperblockOffset:]
	sb := &im.Superblock
	sb.Magic = rdLE.Uint32(s[0:])
	sb.Checksum = rdLE.Uint32(s[4:])
	sb.FeatureCompat = rdLE.Uint32(s[8:])
	sb.BlkSzBits = s[12]
	sb.ExtSlots = s[13]
	sb.RootNid = rdLE.Uint16(s[14:])
	sb.Inos = rdLE.Uint64(s[16:])
	sb.BuildTime = rdLE.Uint64(s[24:])
	sb.BuildTimeNsec = rdLE.Uint32(s[32:])
	sb.Blocks = rdLE.Uint32(s[36:])
	sb.MetaBlkAddr = rdLE.Uint32(s[40:])
	sb.XattrBlkAddr = rdLE.Uint32(s[44:])
	copy(sb.UUID[:], s[48:64])
	copy(sb.VolumeName[:], s[64:80])
	sb.FeatureIncompat = rdLE.Uint32(s[80:])
	sb.DirBlkBits = s[90]

	const sbOff = SuperblockOffset
	if sb.Magic != SuperblockMagic {
		return nil, rdCorruptf(sbOff, "bad EROFS superblock magic %#08x (want %#08x)", sb.Magic, SuperblockMagic)
	}
	if sb.BlkSzBits != BlockSizeBits {
		return nil, rdUnsupportedf(sbOff+12, "block size 2^%d (only 2^%d is supported)", sb.BlkSzBits, BlockSizeBits)
	}
	if extra := sb.FeatureIncompat &^ readerFeatureIncompatChunkedFile; extra != 0 {
		return nil, rdUnsupportedf(sbOff+80, "incompatible EROFS features %#x", extra)
	}
	if sb.DirBlkBits != 0 {
		return nil, rdUnsupportedf(sbOff+90, "directory block size bits %d", sb.DirBlkBits)
	}
	im.limit = int64(sb.Blocks) * BlockSize
	if im.limit > size {
		return nil, rdCorruptf(sbOff+36, "image truncated: the superblock says %d blocks (%d bytes), the image has %d bytes", sb.Blocks, im.limit, size)
	}
	im.metaBase = int64(sb.MetaBlkAddr) * BlockSize
	im.xattrBase = int64(sb.XattrBlkAddr) * BlockSize
	if im.metaBase >= im.limit {
		return nil, rdCorruptf(sbOff+40, "meta_blkaddr %d is outside the image", sb.MetaBlkAddr)
	}
	if im.xattrBase >= im.limit {
		return nil, rdCorruptf(sbOff+44, "xattr_blkaddr %d is outside the image", sb.XattrBlkAddr)
	}
	im.br = rdBlockReader{r: r, limit: im.limit}
	return im, nil
}

// BuildTime is the superblock build time: the mtime of every compact
// inode.
func (im *Image) BuildTime() composefs.Timespec {
	return composefs.Timespec{Sec: int64(im.Superblock.BuildTime), Nsec: im.Superblock.BuildTimeNsec}
}

// Tree reads the whole image into a composefs tree (see Read).
func (im *Image) Tree() (*composefs.Node, error) {
	w := im.newWalker(true)
	root, err := w.root()
	if err != nil {
		return nil, err
	}
	return root, nil
}

// Objects returns the object paths the image references (see Objects).
func (im *Image) Objects() ([]string, error) {
	w := im.newWalker(false)
	set := map[string]struct{}{}
	w.visit = func(n *composefs.Node) error {
		if n.IsRegular() && n.Payload != "" {
			set[n.Payload] = struct{}{}
		}
		return nil
	}
	if _, err := w.root(); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// errStopWalk ends a walk early from a visit function.
var errStopWalk = errors.New("stop walk")

// FirstObject returns the first object path (the redirect of a regular
// file) met in on-disk order, or "" when the image references none. Unlike
// Objects it stops there, so it costs a few inode reads on any image: what
// a caller needs to probe the object store (is fs-verity enabled there?).
func (im *Image) FirstObject() (string, error) {
	w := im.newWalker(false)
	first := ""
	w.visit = func(n *composefs.Node) error {
		if n.IsRegular() && n.Payload != "" {
			first = n.Payload
			return errStopWalk
		}
		return nil
	}
	if _, err := w.root(); err != nil && !errors.Is(err, errStopWalk) {
		return "", err
	}
	return first, nil
}

// rdReadFull reads exactly len(p) bytes at off, turning a short read into a
// truncation error.
func rdReadFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return rdCorruptf(off+int64(n), "image truncated: read %d of %d bytes", n, len(p))
	}
	return fmt.Errorf("reading composefs image at offset %d: %w", off, err)
}

// rdBlockReader reads byte ranges of the image through a small direct-mapped
// cache of 4096-byte blocks, so that walking the inode table does not cost
// one read call per inode.
type rdBlockReader struct {
	r     io.ReaderAt
	limit int64
	slots [readerCacheSlots]struct {
		blk  int64
		data []byte
	}
}

// block returns the cached contents of block blk (valid until the next
// call).
func (b *rdBlockReader) block(blk int64) ([]byte, error) {
	s := &b.slots[blk%readerCacheSlots]
	if s.data != nil && s.blk == blk {
		return s.data, nil
	}
	if s.data == nil {
		s.data = make([]byte, BlockSize)
	}
	s.blk = -1
	if err := rdReadFull(b.r, s.data, blk*BlockSize); err != nil {
		return nil, err
	}
	s.blk = blk
	return s.data, nil
}

// read returns a copy of n bytes at off, which must lie inside the image.
func (b *rdBlockReader) read(off int64, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > b.limit || n > b.limit-off {
		return nil, rdCorruptf(off, "range of %d bytes at offset %d is outside the image (%d bytes)", n, off, b.limit)
	}
	out := make([]byte, n)
	for done := int64(0); done < n; {
		pos := off + done
		blk, err := b.block(pos / BlockSize)
		if err != nil {
			return nil, err
		}
		done += int64(copy(out[done:], blk[pos%BlockSize:]))
	}
	return out, nil
}

// rdInode is one on-disk inode, decoded.
type rdInode struct {
	nid      uint64
	off      int64 // byte offset of the inode
	layout   uint8 // data layout (LayoutFlatPlain, …)
	extended bool
	mode     uint32
	nlink    uint32
	uid, gid uint32
	size     uint64
	mtime    composefs.Timespec
	iu       uint32 // raw_blkaddr, rdev or chunk info
	isize    int64  // 32 or 64
	xcount   uint16 // i_xattr_icount
	xsize    int64  // bytes of the xattr ibody
}

func (ino *rdInode) typ() uint32 { return ino.mode & composefs.ModeTypeMask }

// xattrOff is the offset of the xattr ibody; tailOff that of the inline
// data tail.
func (ino *rdInode) xattrOff() int64 { return ino.off + ino.isize }
func (ino *rdInode) tailOff() int64  { return ino.off + ino.isize + ino.xsize }

// inode reads and decodes the inode with the given nid.
func (im *Image) inode(nid uint64) (*rdInode, error) {
	maxNid := uint64(im.limit-im.metaBase) / InodeSlotSize
	if nid >= maxNid {
		return nil, rdCorruptf(-1, "inode nid %d is outside the image", nid)
	}
	off := im.metaBase + int64(nid)*InodeSlotSize
	b, err := im.br.read(off, InodeCompactSize)
	if err != nil {
		return nil, err
	}
	rdLE := binary.LittleEndian
	format := rdLE.Uint16(b[0:])
	if format&^0xF != 0 {
		return nil, rdUnsupportedf(off, "inode nid %d: unknown i_format bits %#x", nid, format)
	}
	ino := &rdInode{
		nid:      nid,
		off:      off,
		layout:   uint8(format>>1) & 0x7,
		extended: format&1 != 0,
		xcount:   rdLE.Uint16(b[2:]),
		mode:     uint32(rdLE.Uint16(b[4:])),
	}
	if ino.extended {
		b, err = im.br.read(off, InodeExtendedSize)
		if err != nil {
			return nil, err
		}
		ino.isize = InodeExtendedSize
		ino.size = rdLE.Uint64(b[8:])
		ino.iu = rdLE.Uint32(b[16:])
		ino.uid = rdLE.Uint32(b[24:])
		ino.gid = rdLE.Uint32(b[28:])
		ino.mtime = composefs.Timespec{Sec: int64(rdLE.Uint64(b[32:])), Nsec: rdLE.Uint32(b[40:])}
		ino.nlink = rdLE.Uint32(b[44:])
	} else {
		ino.isize = InodeCompactSize
		ino.nlink = uint32(rdLE.Uint16(b[6:]))
		ino.size = uint64(rdLE.Uint32(b[8:]))
		ino.iu = rdLE.Uint32(b[16:])
		ino.uid = uint32(rdLE.Uint16(b[24:]))
		ino.gid = uint32(rdLE.Uint16(b[26:]))
		ino.mtime = im.BuildTime()
	}
	switch ino.typ() {
	case composefs.TypeDir, composefs.TypeRegular, composefs.TypeSymlink,
		composefs.TypeChar, composefs.TypeBlock, composefs.TypeFifo, composefs.TypeSocket:
	default:
		return nil, rdCorruptf(off+4, "inode nid %d: mode %o has no valid file type", nid, ino.mode)
	}
	switch ino.layout {
	case LayoutFlatPlain, LayoutFlatInline, LayoutChunkBased:
	case 1, 3:
		return nil, rdUnsupportedf(off, "inode nid %d: compressed data layout %d", nid, ino.layout)
	default:
		return nil, rdCorruptf(off, "inode nid %d: invalid data layout %d", nid, ino.layout)
	}
	if ino.xcount > 0 {
		ino.xsize = XattrIbodyHeaderSize + int64(ino.xcount-1)*4
	}
	if end := ino.off + ino.isize + ino.xsize; end > im.limit {
		return nil, rdCorruptf(off, "inode nid %d: inode and xattrs (%d bytes) extend past the end of the image", nid, ino.isize+ino.xsize)
	}
	return ino, nil
}

// flatData returns the data of a FLAT_PLAIN or FLAT_INLINE inode: size
// bytes, read from its data blocks and its inline tail. size has been
// bounded by the caller.
func (im *Image) flatData(ino *rdInode) ([]byte, error) {
	if ino.size == 0 {
		return nil, nil
	}
	out := make([]byte, 0, ino.size)
	err := im.flatChunks(ino, func(_ int64, b []byte) error {
		out = append(out, b...)
		return nil
	})
	return out, err
}

// flatChunks calls fn for every piece of a flat inode's data in order: each
// data block (the last one of a FLAT_PLAIN inode possibly partial), then
// the inline tail. off is the image offset of the piece.
func (im *Image) flatChunks(ino *rdInode, fn func(off int64, b []byte) error) error {
	size := ino.size
	if size == 0 {
		return nil
	}
	if size > uint64(im.limit) {
		return rdCorruptf(ino.off, "inode nid %d: data size %d is larger than the image", ino.nid, size)
	}
	nblocks := int64((size + BlockSize - 1) / BlockSize)
	plain := int64(size) // bytes stored in data blocks
	var tail int64
	switch ino.layout {
	case LayoutFlatPlain:
	case LayoutFlatInline:
		plain = (nblocks - 1) * BlockSize
		tail = int64(size) - plain
	default:
		return rdCorruptf(ino.off, "inode nid %d: data layout %d is not flat", ino.nid, ino.layout)
	}
	if plain > 0 {
		start := int64(ino.iu) * BlockSize
		if start > im.limit || plain > im.limit-start {
			return rdCorruptf(ino.off+16, "inode nid %d: data blocks %d..+%d are outside the image", ino.nid, ino.iu, nblocks)
		}
		for pos := int64(0); pos < plain; pos += BlockSize {
			n := min(plain-pos, BlockSize)
			b, err := im.br.read(start+pos, n)
			if err != nil {
				return err
			}
			if err := fn(start+pos, b); err != nil {
				return err
			}
		}
	}
	if tail > 0 {
		toff := ino.tailOff()
		if toff%BlockSize+tail > BlockSize {
			return rdCorruptf(toff, "inode nid %d: inline data of %d bytes crosses a block boundary", ino.nid, tail)
		}
		b, err := im.br.read(toff, tail)
		if err != nil {
			return err
		}
		if err := fn(toff, b); err != nil {
			return err
		}
	}
	return nil
}

// rdDirent is one directory entry.
type rdDirent struct {
	name  string
	nid   uint64
	ftype uint8
	off   int64 // image offset of the 12-byte entry
}

// rdParseDirBlock decodes one directory block or inline tail (off is its
// image offset) and calls fn for each entry in order.
func rdParseDirBlock(b []byte, off int64, fn func(d rdDirent) error) error {
	if len(b) > readerMaxDirBlock {
		return rdCorruptf(off, "directory block of %d bytes", len(b))
	}
	if len(b) < DirentSize {
		return rdCorruptf(off, "directory block of %d bytes is too short for an entry", len(b))
	}
	rdLE := binary.LittleEndian
	first := int(rdLE.Uint16(b[8:]))
	if first < DirentSize || first%DirentSize != 0 || first > len(b) {
		return rdCorruptf(off+8, "directory block: first name offset %d is invalid (block of %d bytes)", first, len(b))
	}
	n := first / DirentSize
	for i := range n {
		e := b[i*DirentSize:]
		start := int(rdLE.Uint16(e[8:]))
		if start < first || start > len(b) {
			return rdCorruptf(off+int64(i*DirentSize)+8, "directory entry %d: name offset %d is out of range (block of %d bytes)", i, start, len(b))
		}
		var end int
		if i+1 < n {
			end = int(rdLE.Uint16(e[DirentSize+8:]))
		} else {
			// The last name ends at the first NUL or the end of the block.
			end = len(b)
			if j := bytes.IndexByte(b[start:], 0); j >= 0 {
				end = start + j
			}
		}
		if end < start || end > len(b) {
			return rdCorruptf(off+int64(i*DirentSize)+8, "directory entry %d: name offsets %d..%d are out of range (block of %d bytes)", i, start, end, len(b))
		}
		if end == start {
			return rdCorruptf(off+int64(i*DirentSize)+8, "directory entry %d has an empty name", i)
		}
		d := rdDirent{
			name:  string(b[start:end]),
			nid:   rdLE.Uint64(e[0:]),
			ftype: e[10],
			off:   off + int64(i*DirentSize),
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// rdSeen records an inode already met during the walk.
type rdSeen struct {
	node    *composefs.Node // nil when the walk keeps no nodes or it was dropped
	rawType uint32          // file type bits of the on-disk mode
	dropped bool            // a whiteout (char 0/0): not part of the tree
}

// rdSharedXattr is a decoded shared xattr entry (interned: many inodes
// reference the same entry).
type rdSharedXattr struct {
	name, value string
}

// rdWalker walks the directory tree of an image depth-first in on-disk
// order, as upstream's reader does.
type rdWalker struct {
	im    *Image
	build bool // keep the tree and read inline content and symlink targets
	// visit, if set, is called for every non-directory inode once its
	// node is complete.
	// A non-nil error ends the walk with that error.
	visit func(n *composefs.Node) error

	seen   map[uint64]rdSeen
	shared map[uint32]rdSharedXattr
	// Budgets bounding the work on hostile images (images are never
	// amplified: every rdDirent and every materialised byte of a valid
	// image is stored once).
	direntBudget int64 // directory entries left to process
	byteBudget   int64 // bytes left to copy out of the image
}

func (im *Image) newWalker(build bool) *rdWalker {
	return &rdWalker{
		im:           im,
		build:        build,
		seen:         map[uint64]rdSeen{},
		shared:       map[uint32]rdSharedXattr{},
		direntBudget: im.limit / DirentSize,
		byteBudget:   2*im.limit + 1<<16,
	}
}

// spend charges n bytes against the copy budget.
func (w *rdWalker) spend(off, n int64) error {
	w.byteBudget -= n
	if w.byteBudget < 0 {
		return rdCorruptf(off, "image references more data than it holds (overlapping inodes or data)")
	}
	return nil
}

func (w *rdWalker) root() (*composefs.Node, error) {
	nid := uint64(w.im.Superblock.RootNid)
	ino, err := w.im.inode(nid)
	if err != nil {
		return nil, rdWithRootPath(err)
	}
	if ino.typ() != composefs.TypeDir {
		return nil, rdWithRootPath(rdCorruptf(ino.off+4, "root inode nid %d is not a directory (mode %o)", nid, ino.mode))
	}
	n, _, err := w.node(nid, ino, 0)
	if err != nil {
		return nil, rdWithRootPath(err)
	}
	return n, nil
}

func rdWithRootPath(err error) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Path == "" {
		fe.Path = "/"
	}
	return err
}

// entry resolves the directory entry d: a new node, a hardlink to a node
// met before, or nil for a dropped whiteout.
func (w *rdWalker) entry(d rdDirent, depth int) (*composefs.Node, error) {
	if s, ok := w.seen[d.nid]; ok {
		if err := rdCheckFtype(d, s.rawType); err != nil {
			return nil, err
		}
		switch {
		case s.dropped:
			return nil, nil
		case s.rawType == composefs.TypeDir:
			return nil, rdCorruptf(d.off, "directory nid %d is referenced a second time (directory loop or hardlinked directory)", d.nid)
		case !w.build:
			return nil, nil
		}
		// A hardlink entry: Link is what matters; Mode repeats the
		// target's (as a dump line does) for callers that look at it.
		return &composefs.Node{Name: d.name, Mode: s.node.Mode, Link: s.node}, nil
	}
	ino, err := w.im.inode(d.nid)
	if err != nil {
		return nil, err
	}
	if err := rdCheckFtype(d, ino.typ()); err != nil {
		return nil, err
	}
	n, dropped, err := w.node(d.nid, ino, depth)
	if err != nil || dropped {
		return nil, err
	}
	if n != nil {
		n.Name = d.name
	}
	return n, nil
}

func rdCheckFtype(d rdDirent, rawType uint32) error {
	if want := FileType(rawType); d.ftype != want {
		return rdCorruptf(d.off+10, "directory entry %q has file type %d, its inode nid %d has type %d", d.name, d.ftype, d.nid, want)
	}
	return nil
}

// node builds the node of inode ino (not seen before). dropped reports a
// whiteout, which is not part of the tree.
func (w *rdWalker) node(nid uint64, ino *rdInode, depth int) (n *composefs.Node, dropped bool, err error) {
	typ := ino.typ()
	n = &composefs.Node{
		Mode:  ino.mode,
		Nlink: ino.nlink,
		UID:   ino.uid,
		GID:   ino.gid,
		Size:  ino.size,
		Mtime: ino.mtime,
	}
	if typ == composefs.TypeChar || typ == composefs.TypeBlock {
		n.Rdev = uint64(ino.iu)
	}
	if typ == composefs.TypeChar && n.Rdev == 0 {
		// A whiteout: a root stub or an unconverted whiteout.
		w.seen[nid] = rdSeen{rawType: typ, dropped: true}
		return nil, true, nil
	}
	s := rdSeen{rawType: typ}
	if w.build {
		s.node = n
	}
	w.seen[nid] = s

	switch typ {
	case composefs.TypeDir:
		if err := w.readDir(n, ino, depth); err != nil {
			return nil, false, err
		}
	case composefs.TypeSymlink:
		if err := w.readSymlink(n, ino); err != nil {
			return nil, false, err
		}
	case composefs.TypeRegular:
		if err := w.readRegular(n, ino); err != nil {
			return nil, false, err
		}
	}
	if err := w.readXattrs(n, ino); err != nil {
		return nil, false, err
	}
	if typ != composefs.TypeDir && w.visit != nil {
		if err := w.visit(n); err != nil {
			return nil, false, err
		}
	}
	if !w.build {
		n = nil
	}
	return n, false, nil
}

func (w *rdWalker) readDir(n *composefs.Node, ino *rdInode, depth int) error {
	if depth >= readerMaxDepth {
		return rdCorruptf(ino.off, "directories nested deeper than %d levels", readerMaxDepth)
	}
	if ino.layout != LayoutFlatPlain && ino.layout != LayoutFlatInline {
		return rdCorruptf(ino.off, "directory inode nid %d has data layout %d", ino.nid, ino.layout)
	}
	var prev string
	first := true
	return w.im.flatChunks(ino, func(off int64, b []byte) error {
		return rdParseDirBlock(b, off, func(d rdDirent) error {
			w.direntBudget--
			if w.direntBudget < 0 {
				return rdCorruptf(d.off, "more directory entries than the image can hold (shared directory blocks?)")
			}
			if !first && d.name <= prev {
				return rdCorruptf(d.off, "directory entry %q is out of order or repeated (after %q)", rdClip(d.name), rdClip(prev))
			}
			first, prev = false, d.name
			if d.name == "." || d.name == ".." {
				return nil
			}
			if err := composefs.ValidName(d.name); err != nil {
				return rdCorruptf(d.off, "directory entry: %v", err)
			}
			if err := w.spend(d.off, int64(len(d.name))); err != nil {
				return err
			}
			child, err := w.entry(d, depth+1)
			if err != nil {
				return rdWithPath(err, d.name)
			}
			if child == nil {
				return nil
			}
			if err := n.AddChild(child); err != nil {
				return rdWithPath(rdCorruptf(d.off, "%v", err), d.name)
			}
			return nil
		})
	})
}

func rdClip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (w *rdWalker) readSymlink(n *composefs.Node, ino *rdInode) error {
	if ino.size == 0 || ino.size > composefs.MaxSymlinkLen {
		return rdCorruptf(ino.off+8, "symlink nid %d: target length %d is not in 1..%d", ino.nid, ino.size, composefs.MaxSymlinkLen)
	}
	if !w.build {
		return nil
	}
	if err := w.spend(ino.off, int64(ino.size)); err != nil {
		return err
	}
	target, err := w.im.flatData(ino)
	if err != nil {
		return err
	}
	if i := strings.IndexByte(string(target), 0); i >= 0 {
		return rdCorruptf(ino.off, "symlink nid %d: target contains a NUL byte", ino.nid)
	}
	n.Payload = string(target)
	return nil
}

func (w *rdWalker) readRegular(n *composefs.Node, ino *rdInode) error {
	if ino.size > composefs.MaxFileSize {
		return rdCorruptf(ino.off+8, "regular file nid %d: size %d is larger than %d", ino.nid, ino.size, uint64(composefs.MaxFileSize))
	}
	switch ino.layout {
	case LayoutChunkBased:
		// External content: payload and digest come from the xattrs.
		return nil
	case LayoutFlatPlain, LayoutFlatInline:
	default:
		return rdCorruptf(ino.off, "regular file nid %d has data layout %d", ino.nid, ino.layout)
	}
	if ino.size == 0 {
		return nil
	}
	if ino.size > composefs.MaxInlineContent {
		return rdCorruptf(ino.off+8, "regular file nid %d: inline content of %d bytes is larger than %d", ino.nid, ino.size, composefs.MaxInlineContent)
	}
	if !w.build {
		return nil
	}
	if err := w.spend(ino.off, int64(ino.size)); err != nil {
		return err
	}
	content, err := w.im.flatData(ino)
	if err != nil {
		return err
	}
	n.Content = content
	return nil
}

// readXattrs applies the inode's xattrs to n, in the order the image
// lists them (inline entries first, then shared ones), through
// rdXattrSet.apply.
func (w *rdWalker) readXattrs(n *composefs.Node, ino *rdInode) error {
	xs := rdNewXattrSet(n)
	return w.forEachXattr(ino, func(name, value string) error {
		xs.apply(name, value)
		return nil
	})
}

// forEachXattr calls fn with the full name and value of every raw xattr of
// the inode: inline entries first, then shared ones.
func (w *rdWalker) forEachXattr(ino *rdInode, fn func(name, value string) error) error {
	if ino.xsize == 0 {
		return nil
	}
	xoff := ino.xattrOff()
	if err := w.spend(xoff, ino.xsize); err != nil {
		return err
	}
	body, err := w.im.br.read(xoff, ino.xsize)
	if err != nil {
		return err
	}
	rdLE := binary.LittleEndian
	nshared := int64(body[4])
	pos := int64(XattrIbodyHeaderSize) + 4*nshared
	if pos > ino.xsize {
		return rdCorruptf(xoff+4, "inode nid %d: %d shared xattr ids do not fit in an xattr area of %d bytes", ino.nid, nshared, ino.xsize)
	}
	// Inline entries until the end of the area. (Upstream's loop stops
	// when fewer than 5 bytes are left, which loses a last entry of 4
	// bytes: an empty value under a bare prefix such as
	// system.posix_acl_access. The kernel lists it, so we do too.)
	for pos+XattrEntryHeaderSize <= ino.xsize {
		nameLen := int64(body[pos])
		index := body[pos+1]
		valueLen := int64(rdLE.Uint16(body[pos+2:]))
		end := pos + XattrEntryHeaderSize + nameLen + valueLen
		if end > ino.xsize {
			return rdCorruptf(xoff+pos, "inode nid %d: inline xattr entry of %d bytes overruns the xattr area", ino.nid, end-pos)
		}
		suffix := body[pos+XattrEntryHeaderSize : pos+XattrEntryHeaderSize+nameLen]
		name, err := rdXattrName(index, suffix, xoff+pos)
		if err != nil {
			return err
		}
		if err := fn(name, string(body[pos+XattrEntryHeaderSize+nameLen:end])); err != nil {
			return err
		}
		pos = (end + 3) &^ 3
	}
	for i := range nshared {
		id := rdLE.Uint32(body[XattrIbodyHeaderSize+4*i:])
		x, err := w.readShared(id, xoff+XattrIbodyHeaderSize+4*i)
		if err != nil {
			return err
		}
		if err := fn(x.name, x.value); err != nil {
			return err
		}
	}
	return nil
}

// readShared reads (once) the shared xattr entry with the given id.
func (w *rdWalker) readShared(id uint32, refOff int64) (rdSharedXattr, error) {
	if x, ok := w.shared[id]; ok {
		return x, nil
	}
	off := w.im.xattrBase + int64(id)*4
	if off+XattrEntryHeaderSize > w.im.limit {
		return rdSharedXattr{}, rdCorruptf(refOff, "shared xattr id %d is outside the image", id)
	}
	h, err := w.im.br.read(off, XattrEntryHeaderSize)
	if err != nil {
		return rdSharedXattr{}, err
	}
	nameLen := int64(h[0])
	valueLen := int64(binary.LittleEndian.Uint16(h[2:]))
	if off+XattrEntryHeaderSize+nameLen+valueLen > w.im.limit {
		return rdSharedXattr{}, rdCorruptf(off, "shared xattr id %d extends past the end of the image", id)
	}
	if err := w.spend(off, XattrEntryHeaderSize+nameLen+valueLen); err != nil {
		return rdSharedXattr{}, err
	}
	b, err := w.im.br.read(off+XattrEntryHeaderSize, nameLen+valueLen)
	if err != nil {
		return rdSharedXattr{}, err
	}
	name, err := rdXattrName(h[1], b[:nameLen], off)
	if err != nil {
		return rdSharedXattr{}, err
	}
	x := rdSharedXattr{name: name, value: string(b[nameLen:])}
	w.shared[id] = x
	return x, nil
}

// rdXattrName builds the full name of an xattr entry from its name index
// and stored suffix.
func rdXattrName(index uint8, suffix []byte, off int64) (string, error) {
	if index >= readerXattrIndexLimit {
		return "", rdUnsupportedf(off+1, "xattr name index %d", index)
	}
	name := ReaderXattrPrefixes[index] + string(suffix)
	switch {
	case name == "":
		return "", rdCorruptf(off, "xattr with an empty name")
	case len(name) > composefs.MaxXattrNameLen:
		return "", rdCorruptf(off, "xattr name of %d bytes is longer than %d", len(name), composefs.MaxXattrNameLen)
	case strings.IndexByte(name, 0) >= 0:
		return "", rdCorruptf(off, "xattr name contains a NUL byte")
	}
	return name, nil
}

// rdXattrSet applies xattrs to a node the way upstream's reader does; an
// index makes replacing repeated names linear.
type rdXattrSet struct {
	n   *composefs.Node
	idx map[string]int
}

func rdNewXattrSet(n *composefs.Node) *rdXattrSet { return &rdXattrSet{n: n} }

// apply handles one raw xattr from the image (spec §12): the overlay
// xattrs composefs adds become payload, digest or whiteout, escaped
// trusted.overlay.overlay.* names lose one level of escaping, other
// trusted.overlay.* names are dropped, and everything else is kept (a
// repeated name replaces the earlier value in place).
func (s *rdXattrSet) apply(name, value string) {
	n := s.n
	switch name {
	case XattrRedirect:
		if n.IsRegular() {
			// Upstream strips one leading '/' when the value has more
			// than one byte and stops at a NUL (C string).
			if len(value) > 1 && value[0] == '/' {
				value = value[1:]
			}
			if i := strings.IndexByte(value, 0); i >= 0 {
				value = value[:i]
			}
			n.Payload = value
		}
		return
	case XattrMetacopy:
		if n.IsRegular() && len(value) == readerMetacopySize {
			var d fsverity.Digest
			copy(d[:], value[4:])
			n.Digest = &d
		}
		return
	case XattrEscapedWhiteout:
		if n.IsRegular() {
			// A converted whiteout: back to a character device 0/0.
			n.Mode = n.Mode&composefs.ModePermMask | composefs.TypeChar
			n.Rdev = 0
			n.Size = 0
			n.Content = nil
			return
		}
	case XattrEscapedWhiteouts, XattrUserOverlayWhiteout, XattrUserOverlayWhiteouts:
		return
	}
	if strings.HasPrefix(name, XattrOverlayPrefix) {
		if !strings.HasPrefix(name, XattrOverlayEscapedPrefix) {
			return
		}
		name = XattrOverlayPrefix + name[len(XattrOverlayEscapedPrefix):]
	}
	s.set(name, value)
}

func (s *rdXattrSet) set(name, value string) {
	xs := s.n.Xattrs
	if s.idx == nil && len(xs) >= 8 {
		s.idx = make(map[string]int, len(xs))
		for i, x := range xs {
			s.idx[x.Name] = i
		}
	}
	if s.idx != nil {
		if i, ok := s.idx[name]; ok {
			xs[i].Value = value
			return
		}
		s.idx[name] = len(xs)
	} else {
		for i := range xs {
			if xs[i].Name == name {
				xs[i].Value = value
				return
			}
		}
	}
	s.n.Xattrs = append(xs, composefs.Xattr{Name: name, Value: value})
}
