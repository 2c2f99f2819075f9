package erofs

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// WriteOptions selects the composefs format version range, like
// mkcomposefs's --min-version and --max-version (spec §4).
//
// The zero value means min 0 / max 0 (version 0 pinned), exactly as
// mkcomposefs behaves when only one of the two options is given; use
// DefaultWriteOptions for mkcomposefs's defaults.
type WriteOptions struct {
	// MinVersion is the base format version (0 or 1).
	MinVersion int
	// MaxVersion is the highest version the writer may raise to when the
	// tree needs it (it contains an overlay whiteout). A value below
	// MinVersion is raised to MinVersion; values above 1 are rejected.
	MaxVersion int
}

// DefaultWriteOptions returns mkcomposefs's defaults: min 0, max 1.
func DefaultWriteOptions() WriteOptions { return WriteOptions{MinVersion: 0, MaxVersion: 1} }

// ErrInvalidOptions is returned (wrapped) by Write for options it cannot
// honour, such as a format version above MaxFormatVersion.
var ErrInvalidOptions = errors.New("invalid erofs write options")

// Write serialises the tree rooted at root as a composefs EROFS image,
// byte-for-byte as upstream mkcomposefs 1.0.8 does, to w and returns the
// fs-verity SHA-256 digest of the image bytes. The caller's tree is not
// modified.
//
// The layout is computed in memory from the tree (memory proportional to
// the number of inodes, entries and distinct xattrs), then the image is
// streamed to w in one sequential pass. Errors about the tree match
// composefs.ErrInvalid; I/O errors from w are returned wrapped.
func Write(w io.Writer, root *composefs.Node, opts WriteOptions) (fsverity.Digest, error) {
	b, err := wrPlan(root, opts)
	if err != nil {
		return fsverity.Digest{}, err
	}
	out := wrNewOutput(w)
	if err := b.emit(out); err != nil {
		return fsverity.Digest{}, err
	}
	return out.hasher.Digest(), nil
}

// wrPlan validates the tree and computes the complete image layout.
func wrPlan(root *composefs.Node, opts WriteOptions) (*wrBuilder, error) {
	if root == nil {
		return nil, &composefs.InvalidError{Reason: "no root node"}
	}
	version, maxVersion, err := wrResolveOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := root.Validate(); err != nil {
		return nil, err
	}
	b := &wrBuilder{root: root}
	if err := b.collect(); err != nil {
		return nil, err
	}
	// Version resolution (spec §4): raise to 1 only for whiteouts.
	if version < 1 && maxVersion >= 1 && b.hasWhiteout {
		version = 1
	}
	b.version = version
	if err := b.computeXattrs(); err != nil {
		return nil, err
	}
	b.computeShared()
	if err := b.layout(); err != nil {
		return nil, err
	}
	return b, nil
}

func wrResolveOptions(opts WriteOptions) (version, maxVersion int, err error) {
	minV, maxV := opts.MinVersion, opts.MaxVersion
	if minV < 0 || maxV < 0 {
		return 0, 0, fmt.Errorf("%w: negative format version (min %d, max %d)", ErrInvalidOptions, minV, maxV)
	}
	if minV > MaxFormatVersion || maxV > MaxFormatVersion {
		return 0, 0, fmt.Errorf("%w: format version above %d (min %d, max %d)", ErrInvalidOptions, MaxFormatVersion, minV, maxV)
	}
	if maxV < minV {
		maxV = minV
	}
	return minV, maxV, nil
}

// wrInode is one inode of the image being written, in breadth-first
// order. Its fields are the values after the rewrite pass (spec §5).
type wrInode struct {
	node   *composefs.Node // nil for a root whiteout stub
	mode   uint32
	nlink  uint32
	uid    uint32
	gid    uint32
	mtime  composefs.Timespec
	size   uint64 // st_size
	parent int32  // inode index of the parent directory

	dirStart, dirLen uint32 // directories: range in wrBuilder.dirents
	xStart, xLen     uint32 // range in wrBuilder.xids (sorted by name)

	nBlocks uint32 // data blocks
	tail    uint32 // bytes stored inline after the xattrs
	blk     uint32 // first data block, relative to the data area
	nid     uint64
	compact bool

	whiteout      bool // an input whiteout converted to a regular file
	whiteoutChild bool // a directory with a (converted) whiteout child
}

func (ino *wrInode) typ() uint32 { return ino.mode & composefs.ModeTypeMask }

// external reports whether the inode is a regular file whose data lives
// outside the image (chunk-based stub).
func (ino *wrInode) external() bool {
	return ino.typ() == composefs.TypeRegular && ino.size > 0 && ino.node != nil && ino.node.Content == nil && !ino.whiteout
}

// wrDirent is one directory entry: a name and the inode index it names.
type wrDirent struct {
	name   string
	target int32
}

// wrPendingLink is a hardlink entry whose target index is resolved after
// the breadth-first pass.
type wrPendingLink struct {
	dirent int
	link   *composefs.Node // the hardlink node (for error messages)
	target *composefs.Node
}

// wrXattr is one distinct (name, value) pair of the image.
type wrXattr struct {
	key       string // name + "\x00" + value
	nameLen   uint32
	count     uint32
	shared    int64 // byte offset in the shared table, or -1
	index     uint8 // EROFS name index
	filterBit uint8
	entrySize uint32
}

func (x *wrXattr) name() string   { return x.key[:x.nameLen] }
func (x *wrXattr) value() string  { return x.key[x.nameLen+1:] }
func (x *wrXattr) suffix() string { return x.key[wrPrefixLen(x.index):x.nameLen] }

// wrPair is one xattr of the inode being rewritten. synth marks values
// derived from the node instead of stored in value.
type wrPair struct {
	name  string
	value string
	synth uint8
}

const (
	wrSynthNone = iota
	wrSynthMetacopy
	wrSynthRedirect
)

// wrBuilder holds the whole computed layout.
type wrBuilder struct {
	root    *composefs.Node
	version int

	inodes  []wrInode
	dirents []wrDirent
	links   []wrPendingLink

	hasWhiteout bool
	hasACL      bool
	minMtime    composefs.Timespec

	xattrs     []wrXattr         // distinct pairs
	xindex     map[string]uint32 // key → index in xattrs
	xids       []uint32          // per-inode xattr lists (ranges in wrInode)
	shared     []uint32          // shared table, in on-disk order
	sharedSize uint64

	inodesEnd  uint64
	dataStart  uint64
	dataBlocks uint64
}

// wrStubNames are the root whiteout stub names "00".."ff" (spec §5.4).
var wrStubNames = func() [256]string {
	var s [256]string
	const hexd = "0123456789abcdef"
	for i := range s {
		s[i] = string([]byte{hexd[i>>4], hexd[i&15]})
	}
	return s
}()

// wrEntry is a directory entry being sorted.
type wrEntry struct {
	name string
	node *composefs.Node // nil for ".", ".." and stubs
	kind uint8
}

const (
	wrEntryChild = iota
	wrEntryDot
	wrEntryDotDot
	wrEntryStub
)

// collect walks the tree breadth-first (spec §6): it assigns inode
// numbers, builds every directory's sorted entry list including "." and
// ".." (and the root stubs), converts whiteouts, computes directory link
// counts and resolves hardlinks.
func (b *wrBuilder) collect() error {
	root := b.root
	b.count()
	b.inodes = append(b.inodes, b.newInode(root, 0))
	var scratch []wrEntry
	for i := 0; i < len(b.inodes); i++ {
		n := b.inodes[i].node
		if n == nil || !n.IsDir() {
			continue
		}
		scratch = scratch[:0]
		sorted := true
		for j, c := range n.Children {
			if err := composefs.ValidName(c.Name); err != nil {
				return &composefs.InvalidError{Path: n.Path(), Reason: err.Error()}
			}
			if j > 0 && c.Name <= n.Children[j-1].Name {
				sorted = false
			}
			scratch = append(scratch, wrEntry{name: c.Name, node: c})
		}
		cmp := func(a, b wrEntry) int { return strings.Compare(a.name, b.name) }
		if !sorted {
			slices.SortFunc(scratch, cmp)
			for j := 1; j < len(scratch); j++ {
				if scratch[j].name == scratch[j-1].name {
					return &composefs.InvalidError{Path: n.Path(), Reason: fmt.Sprintf("duplicate entry %q", scratch[j].name)}
				}
			}
		}
		if i == 0 {
			// A root entry named like a stub suppresses that stub.
			nChildren := len(scratch)
			for _, s := range wrStubNames {
				if _, found := slices.BinarySearchFunc(scratch[:nChildren], s, func(e wrEntry, t string) int { return strings.Compare(e.name, t) }); !found {
					scratch = append(scratch, wrEntry{name: s, kind: wrEntryStub})
				}
			}
		}
		scratch = append(scratch, wrEntry{name: ".", kind: wrEntryDot}, wrEntry{name: "..", kind: wrEntryDotDot})
		slices.SortFunc(scratch, cmp)

		start := len(b.dirents)
		nlink := uint32(2)
		hasWhiteoutChild := false
		for _, e := range scratch {
			d := wrDirent{name: e.name}
			switch e.kind {
			case wrEntryDot:
				d.target = int32(i)
			case wrEntryDotDot:
				d.target = b.inodes[i].parent
			case wrEntryStub:
				d.target = int32(len(b.inodes))
				b.inodes = append(b.inodes, b.newStub(i))
			default:
				c := e.node
				if c.Link != nil {
					b.links = append(b.links, wrPendingLink{dirent: len(b.dirents), link: c, target: c.Target()})
					d.target = -1
					break
				}
				d.target = int32(len(b.inodes))
				ci := b.newInode(c, int32(i))
				if ci.whiteout {
					hasWhiteoutChild = true
					b.hasWhiteout = true
				}
				if ci.typ() == composefs.TypeDir {
					nlink++
				}
				b.inodes = append(b.inodes, ci)
			}
			b.dirents = append(b.dirents, d)
		}
		if uint64(len(b.inodes)) > 1<<31-1 || uint64(len(b.dirents)) > 1<<32-1 {
			return &composefs.InvalidError{Reason: "too many inodes"}
		}
		ino := &b.inodes[i]
		ino.dirStart = uint32(start)
		ino.dirLen = uint32(len(b.dirents) - start)
		ino.nlink = nlink
		ino.whiteoutChild = hasWhiteoutChild
	}
	return b.resolveLinks()
}

// count sizes the builder's slices from one pass over the tree, so that
// they are allocated once: inodes (plus the 256 root stubs), directory
// entries (plus "." and ".." per directory), xattr references and a
// guess of the distinct xattrs: two per external file (its metacopy and
// redirect values are usually unique); input xattrs tend to repeat.
func (b *wrBuilder) count() {
	inodes, dirents, xattrs, distinct := 256+1, 256, 1, 0
	stack := []*composefs.Node{b.root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		xattrs += len(n.Xattrs)
		if n.HasExternalData() {
			xattrs += 2
			distinct += 2
		}
		if !n.IsDir() {
			continue
		}
		xattrs += 4
		dirents += len(n.Children) + 2
		for _, c := range n.Children {
			if c.Link == nil {
				inodes++
				stack = append(stack, c)
			}
		}
	}
	b.inodes = make([]wrInode, 0, inodes)
	b.dirents = make([]wrDirent, 0, dirents)
	b.xids = make([]uint32, 0, xattrs)
	b.xattrs = make([]wrXattr, 0, distinct+64)
	b.xindex = make(map[string]uint32, distinct+64)
}

// newInode returns the inode of a non-hardlink node, after the whiteout
// conversion of spec §5.3.
func (b *wrBuilder) newInode(n *composefs.Node, parent int32) wrInode {
	ino := wrInode{
		node:   n,
		mode:   n.Mode,
		nlink:  n.Nlink,
		uid:    n.UID,
		gid:    n.GID,
		mtime:  n.Mtime,
		size:   n.Size,
		parent: parent,
	}
	switch n.Type() {
	case composefs.TypeSymlink:
		ino.size = uint64(len(n.Payload))
	case composefs.TypeChar:
		if n.Rdev == 0 {
			ino.whiteout = true
			ino.mode = composefs.TypeRegular | n.Mode&^composefs.ModeTypeMask
			ino.size = 0
		}
	}
	return ino
}

// newStub returns a root whiteout stub (spec §5.4).
func (b *wrBuilder) newStub(rootIdx int) wrInode {
	r := &b.inodes[rootIdx]
	return wrInode{
		mode:   composefs.TypeChar | 0o644,
		nlink:  1,
		uid:    r.uid,
		gid:    r.gid,
		mtime:  r.mtime,
		parent: int32(rootIdx),
	}
}

// resolveLinks fills in the inode index of every hardlink entry; a link
// to a node that is not part of the tree is an error (upstream EINVAL).
func (b *wrBuilder) resolveLinks() error {
	if len(b.links) == 0 {
		return nil
	}
	targets := make(map[*composefs.Node]int32, len(b.links))
	for _, l := range b.links {
		targets[l.target] = -1
	}
	for i := range b.inodes {
		n := b.inodes[i].node
		if n == nil {
			continue
		}
		if _, ok := targets[n]; ok {
			targets[n] = int32(i)
		}
	}
	for _, l := range b.links {
		t := targets[l.target]
		if t < 0 {
			return &composefs.InvalidError{Path: l.link.Path(), Reason: "hardlink to a node outside the tree"}
		}
		b.dirents[l.dirent].target = t
	}
	return nil
}

// computeXattrs builds every inode's final, sorted xattr list (spec §5,
// §6), interns the distinct pairs and counts their uses (spec §7.3). It
// also computes the minimum mtime and the ACL flag.
func (b *wrBuilder) computeXattrs() error {
	b.minMtime = b.inodes[0].mtime
	var selinux string
	hasSelinux := false
	if v, ok := b.root.GetXattr(XattrSelinux); ok {
		selinux, hasSelinux = v, true
	}
	var pairs []wrPair
	var key []byte
	for i := range b.inodes {
		ino := &b.inodes[i]
		if ino.mtime.Less(b.minMtime) {
			b.minMtime = ino.mtime
		}
		pairs = pairs[:0]
		n := ino.node
		if n == nil {
			if hasSelinux {
				pairs = append(pairs, wrPair{name: XattrSelinux, value: selinux})
			}
		} else {
			budget := XattrIbodyHeaderSize
			for _, x := range n.Xattrs {
				if err := wrCheckXattr(n, x, &budget); err != nil {
					return err
				}
				name := x.Name
				if strings.HasPrefix(name, XattrOverlayPrefix) {
					name = XattrOverlayEscapedPrefix + name[len(XattrOverlayPrefix):]
				}
				pairs = append(pairs, wrPair{name: name, value: x.Value})
			}
			if ino.external() {
				pairs = append(pairs, wrPair{name: XattrMetacopy, synth: wrSynthMetacopy})
				if n.Payload != "" {
					pairs = append(pairs, wrPair{name: XattrRedirect, synth: wrSynthRedirect})
				}
			}
			if ino.whiteout {
				pairs = append(pairs,
					wrPair{name: XattrEscapedWhiteout},
					wrPair{name: XattrUserOverlayWhiteout})
			}
			if ino.whiteoutChild {
				pairs = append(pairs,
					wrPair{name: XattrEscapedWhiteouts},
					wrPair{name: XattrUserOverlayWhiteouts})
				if b.version >= 1 {
					pairs = append(pairs,
						wrPair{name: XattrEscapedOpaque, value: "x"},
						wrPair{name: XattrUserOverlayOpaque, value: "x"})
				}
			}
			if i == 0 {
				pairs = append(pairs, wrPair{name: XattrOpaque, value: "y"})
			}
		}
		// Sort by name; a later set of the same name replaces the value.
		slices.SortStableFunc(pairs, func(a, b wrPair) int { return strings.Compare(a.name, b.name) })
		ino.xStart = uint32(len(b.xids))
		for j := range pairs {
			if j+1 < len(pairs) && pairs[j+1].name == pairs[j].name {
				continue
			}
			p := &pairs[j]
			if p.name == XattrPosixACLAccess || p.name == XattrPosixACLDefault {
				b.hasACL = true
			}
			key = append(key[:0], p.name...)
			key = append(key, 0)
			switch p.synth {
			case wrSynthMetacopy:
				if d := n.Digest; d != nil {
					key = append(key, 0, 4+byte(len(d)), 0, byte(fsverity.SHA256))
					key = append(key, d[:]...)
				}
			case wrSynthRedirect:
				key = append(key, '/')
				key = append(key, n.Payload...)
			default:
				key = append(key, p.value...)
			}
			b.xids = append(b.xids, b.intern(key, len(p.name)))
		}
		ino.xLen = uint32(len(b.xids)) - ino.xStart
	}
	return nil
}

// wrCheckXattr enforces libcomposefs's input limits on one xattr, which
// also guarantee that the EROFS encoding can hold it.
func wrCheckXattr(n *composefs.Node, x composefs.Xattr, budget *int) error {
	switch {
	case x.Name == "":
		return &composefs.InvalidError{Path: n.Path(), Reason: "empty xattr name"}
	case len(x.Name) > composefs.MaxXattrNameLen:
		return &composefs.InvalidError{Path: n.Path(), Reason: fmt.Sprintf("xattr name of %d bytes is longer than %d", len(x.Name), composefs.MaxXattrNameLen)}
	case strings.IndexByte(x.Name, 0) >= 0:
		return &composefs.InvalidError{Path: n.Path(), Reason: "xattr name contains NUL"}
	case len(x.Value) > composefs.MaxXattrValueLen:
		return &composefs.InvalidError{Path: n.Path(), Reason: fmt.Sprintf("xattr %q: value of %d bytes is longer than %d", x.Name, len(x.Value), composefs.MaxXattrValueLen)}
	}
	*budget += 7 + len(x.Name) + len(x.Value)
	if *budget > composefs.MaxXattrBudget {
		return &composefs.InvalidError{Path: n.Path(), Reason: fmt.Sprintf("xattrs take more than the %d bytes an inode can hold", composefs.MaxXattrBudget)}
	}
	return nil
}

// intern returns the index of the pair key (name "\x00" value), adding it
// on first use, and counts one more use.
func (b *wrBuilder) intern(key []byte, nameLen int) uint32 {
	if id, ok := b.xindex[string(key)]; ok {
		b.xattrs[id].count++
		return id
	}
	k := string(key)
	name := k[:nameLen]
	idx, suffix := wrXattrIndex(name)
	id := uint32(len(b.xattrs))
	valueLen := len(k) - nameLen - 1
	b.xattrs = append(b.xattrs, wrXattr{
		key:       k,
		nameLen:   uint32(nameLen),
		count:     1,
		shared:    -1,
		index:     idx,
		filterBit: uint8(xxh32(suffix, XattrFilterSeed+uint32(idx)) & 31),
		entrySize: uint32(wrRoundUp(uint64(XattrEntryHeaderSize+len(suffix)+valueLen), 4)),
	})
	b.xindex[k] = id
	return id
}

// wrXattrIndex returns the EROFS name index of an xattr name and the
// suffix stored on disk (spec §7.1).
func wrXattrIndex(name string) (uint8, string) {
	for _, p := range XattrPrefixes {
		if strings.HasPrefix(name, p.Prefix) {
			return p.Index, name[len(p.Prefix):]
		}
	}
	return 0, name
}

// wrPrefixLen is the length of the prefix the name index stands for.
func wrPrefixLen(index uint8) int {
	for _, p := range XattrPrefixes {
		if p.Index == index {
			return len(p.Prefix)
		}
	}
	return 0
}

// computeShared selects the pairs used by more than one inode and orders
// the shared table (spec §7.3): name descending, then value length
// descending, then value bytes descending.
func (b *wrBuilder) computeShared() {
	for i := range b.xattrs {
		if b.xattrs[i].count > 1 {
			b.shared = append(b.shared, uint32(i))
		}
	}
	slices.SortFunc(b.shared, func(i, j uint32) int {
		x, y := &b.xattrs[i], &b.xattrs[j]
		if c := strings.Compare(y.name(), x.name()); c != 0 {
			return c
		}
		xv, yv := x.value(), y.value()
		if len(xv) != len(yv) {
			return len(yv) - len(xv)
		}
		return strings.Compare(yv, xv)
	})
	var off uint64
	for _, id := range b.shared {
		x := &b.xattrs[id]
		x.shared = int64(off)
		off += uint64(x.entrySize)
	}
	b.sharedSize = off
	// The per-inode ids are kept; the shared table no longer needs the
	// lookup map.
	b.xindex = nil
}

// inodeXattrs returns the number of shared references and the ibody size
// of an inode (spec §7.3, §7.4).
func (b *wrBuilder) inodeXattrs(ino *wrInode) (nShared int, xsize uint32) {
	if ino.xLen == 0 {
		return 0, 0
	}
	size := uint32(XattrIbodyHeaderSize)
	for _, id := range b.xids[ino.xStart : ino.xStart+ino.xLen] {
		x := &b.xattrs[id]
		if x.shared >= 0 && nShared < MaxSharedXattrsPerInode {
			nShared++
			size += 4
		} else {
			size += x.entrySize
		}
	}
	return nShared, size
}

// wrDirChunks splits a directory's entries into blocks (spec §9): fn is
// called with each range of entries and its byte size; the last range is
// the partial remainder (possibly empty).
func wrDirChunks(ents []wrDirent, fn func(from, to int, size uint32)) {
	first := 0
	var size uint32
	for i := range ents {
		l := uint32(DirentSize + len(ents[i].name))
		if size+l > BlockSize {
			fn(first, i, size)
			first = i
			size = 0
		}
		size += l
	}
	fn(first, len(ents), size)
}

func wrRoundUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

// wrChunkBits returns the chunk size bits of an external file (spec §8.5).
func wrChunkBits(size uint64) uint32 {
	bits := uint32(0)
	for v := size - 1; v != 0; v >>= 1 {
		bits++
	}
	if bits < BlockSizeBits {
		bits = BlockSizeBits
	}
	if bits-BlockSizeBits > ChunkFormatBlkbitsMask {
		bits = ChunkFormatBlkbitsMask + BlockSizeBits
	}
	return bits
}

func wrChunkCount(size uint64) uint64 {
	bits := wrChunkBits(size)
	return (size + (1 << bits) - 1) >> bits
}

// layout computes sizes, compact/extended, tail packing, padding and nids
// of every inode and the block addresses of the data area (spec §8, §10).
func (b *wrBuilder) layout() error {
	pos := uint64(SuperblockOffset + SuperblockSize)
	var blocks uint64
	for i := range b.inodes {
		ino := &b.inodes[i]
		// §8.1 data size and tail.
		switch ino.typ() {
		case composefs.TypeDir:
			ents := b.dirents[ino.dirStart : ino.dirStart+ino.dirLen]
			var nb uint32
			var last uint32
			wrDirChunks(ents, func(from, to int, size uint32) {
				if to < len(ents) {
					nb++
				} else {
					last = size
				}
			})
			if last > BlockSize/2 {
				nb++
				last = 0
			}
			ino.nBlocks, ino.tail = nb, last
		case composefs.TypeSymlink:
			ino.tail = uint32(len(ino.node.Payload))
		case composefs.TypeRegular:
			switch {
			case ino.size == 0:
			case ino.external():
				ino.tail = uint32(4 * wrChunkCount(ino.size))
			default:
				ino.nBlocks = uint32(ino.size / BlockSize)
				ino.tail = uint32(ino.size % BlockSize)
				if ino.tail > BlockSize/2 {
					ino.nBlocks++
					ino.tail = 0
				}
			}
		}
		// §8.2 compact or extended.
		isize := uint64(ino.size)
		if ino.typ() == composefs.TypeDir {
			isize = uint64(ino.nBlocks)*BlockSize + uint64(ino.tail)
		}
		ino.compact = ino.mtime == b.minMtime && ino.nlink <= 0xFFFF && ino.uid <= 0xFFFF &&
			ino.gid <= 0xFFFF && isize <= 0xFFFFFFFF
		isz := uint64(InodeExtendedSize)
		if ino.compact {
			isz = InodeCompactSize
		}
		_, xsize := b.inodeXattrs(ino)
		// §8.3 placement.
		pos = wrRoundUp(pos, InodeSlotSize)
		pos += b.tailPadding(ino, pos, isz, uint64(xsize))
		ino.nid = pos / InodeSlotSize
		pos += isz + uint64(xsize) + uint64(ino.tail)
		if ino.nBlocks > 0 {
			ino.blk = uint32(blocks)
			blocks += uint64(ino.nBlocks)
			if blocks > 1<<32-1 {
				return &composefs.InvalidError{Reason: "image needs more than 2^32 blocks"}
			}
		}
	}
	b.inodesEnd = wrRoundUp(pos, InodeSlotSize)
	b.dataStart = wrRoundUp(b.inodesEnd+b.sharedSize, BlockSize)
	b.dataBlocks = blocks
	if b.dataStart/BlockSize+blocks > 1<<32-1 {
		return &composefs.InvalidError{Reason: "image needs more than 2^32 blocks"}
	}
	if b.inodes[0].nid > 0xFFFF {
		return &composefs.InvalidError{Path: "/", Reason: "root inode does not fit a 16-bit nid"}
	}
	return nil
}

// tailPadding returns the padding placed before an inode at pos so that
// its inline tail does not cross a block boundary, and moves a tail that
// cannot be inlined to a data block (spec §8.3).
func (b *wrBuilder) tailPadding(ino *wrInode, pos, isz, xsize uint64) uint64 {
	tail := uint64(ino.tail)
	if ino.typ() == composefs.TypeSymlink {
		total := isz + xsize + tail
		if total >= BlockSize {
			ino.nBlocks = 1
			ino.tail = 0
		}
		if pos/BlockSize != (pos+total-1)/BlockSize {
			return wrRoundUp(pos, BlockSize) - pos
		}
		return 0
	}
	if tail == 0 {
		return 0
	}
	rem := BlockSize - (pos+isz+xsize)%BlockSize
	if rem >= tail {
		return 0
	}
	extra := wrRoundUp(rem, InodeSlotSize)
	rem2 := BlockSize - (pos+isz+xsize+extra)%BlockSize
	if tail <= rem2 {
		return extra
	}
	ino.nBlocks++
	ino.tail = 0
	return wrRoundUp(pos, BlockSize) - pos
}
