package erofs

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// wrOutBufSize is the size of the output buffer: the writer hands w and
// the fs-verity hasher whole 64 KiB chunks.
const wrOutBufSize = 64 << 10

// wrOutput buffers the image bytes, feeds them to the fs-verity hasher and
// writes them to w, tracking the position.
type wrOutput struct {
	w      io.Writer
	hasher *fsverity.Hasher
	buf    []byte
	pos    uint64
	err    error
}

func wrNewOutput(w io.Writer) *wrOutput {
	return &wrOutput{w: w, hasher: fsverity.NewHasher(fsverity.SHA256), buf: make([]byte, 0, wrOutBufSize)}
}

func (o *wrOutput) flush() {
	if len(o.buf) == 0 || o.err != nil {
		o.buf = o.buf[:0]
		return
	}
	o.hasher.Write(o.buf)
	if _, err := o.w.Write(o.buf); err != nil {
		o.err = fmt.Errorf("writing composefs image: %w", err)
	}
	o.buf = o.buf[:0]
}

// space returns n writable bytes at the end of the buffer (n ≤ its
// capacity), counted as written.
func (o *wrOutput) space(n int) []byte {
	if len(o.buf)+n > cap(o.buf) {
		o.flush()
	}
	l := len(o.buf)
	o.buf = o.buf[:l+n]
	o.pos += uint64(n)
	return o.buf[l : l+n]
}

func (o *wrOutput) write(s string) {
	for len(s) > 0 {
		if len(o.buf) == cap(o.buf) {
			o.flush()
		}
		c := min(len(s), cap(o.buf)-len(o.buf))
		o.buf = append(o.buf, s[:c]...)
		o.pos += uint64(c)
		s = s[c:]
	}
}

func (o *wrOutput) writeBytes(b []byte) {
	for len(b) > 0 {
		if len(o.buf) == cap(o.buf) {
			o.flush()
		}
		c := min(len(b), cap(o.buf)-len(o.buf))
		o.buf = append(o.buf, b[:c]...)
		o.pos += uint64(c)
		b = b[c:]
	}
}

// fill writes n bytes of value v.
func (o *wrOutput) fill(v byte, n uint64) {
	for n > 0 {
		if len(o.buf) == cap(o.buf) {
			o.flush()
		}
		c := min(n, uint64(cap(o.buf)-len(o.buf)))
		l := len(o.buf)
		o.buf = o.buf[:l+int(c)]
		b := o.buf[l:]
		for i := range b {
			b[i] = v
		}
		o.pos += c
		n -= c
	}
}

// padTo writes zeros up to position p.
func (o *wrOutput) padTo(p uint64) {
	if p > o.pos {
		o.fill(0, p-o.pos)
	}
}

// wrLE is the byte order of every on-disk integer.
var wrLE = binary.LittleEndian

// emit writes the image (spec §10, §11).
func (b *wrBuilder) emit(o *wrOutput) error {
	// composefs header.
	h := o.space(ComposefsHeaderSize)
	clear(h)
	wrLE.PutUint32(h[0:], ComposefsMagic)
	wrLE.PutUint32(h[4:], ComposefsVersion)
	var flags uint32
	if b.hasACL {
		flags |= FlagHasACL
	}
	wrLE.PutUint32(h[8:], flags)
	wrLE.PutUint32(h[12:], uint32(b.version))
	o.padTo(SuperblockOffset)

	// EROFS superblock.
	sb := o.space(SuperblockSize)
	clear(sb)
	wrLE.PutUint32(sb[0:], SuperblockMagic)
	wrLE.PutUint32(sb[8:], FeatureCompat)
	sb[12] = BlockSizeBits
	wrLE.PutUint16(sb[14:], uint16(b.inodes[0].nid))
	wrLE.PutUint64(sb[16:], uint64(len(b.inodes)))
	wrLE.PutUint64(sb[24:], uint64(b.minMtime.Sec))
	wrLE.PutUint32(sb[32:], b.minMtime.Nsec)
	wrLE.PutUint32(sb[36:], uint32(b.dataStart/BlockSize+b.dataBlocks))
	wrLE.PutUint32(sb[44:], uint32(b.inodesEnd/BlockSize))

	dataStartBlk := uint32(b.dataStart / BlockSize)
	for i := range b.inodes {
		b.emitInode(o, i, dataStartBlk)
		if o.err != nil {
			return o.err
		}
	}
	o.padTo(b.inodesEnd)

	for _, id := range b.shared {
		b.emitXattr(o, &b.xattrs[id])
	}
	if o.pos != b.inodesEnd+b.sharedSize {
		return fmt.Errorf("erofs writer: internal error: shared xattrs end at %d, want %d", o.pos, b.inodesEnd+b.sharedSize)
	}
	o.padTo(b.dataStart)

	for i := range b.inodes {
		b.emitData(o, &b.inodes[i])
		if o.err != nil {
			return o.err
		}
	}
	o.flush()
	if o.err != nil {
		return o.err
	}
	if want := b.dataStart + b.dataBlocks*BlockSize; o.pos != want {
		return fmt.Errorf("erofs writer: internal error: image is %d bytes, want %d", o.pos, want)
	}
	return nil
}

// emitInode writes an inode at its slot: padding, the inode, its xattr
// ibody and its inline tail (spec §8.4).
func (b *wrBuilder) emitInode(o *wrOutput, idx int, dataStartBlk uint32) {
	ino := &b.inodes[idx]
	start := ino.nid * InodeSlotSize
	if start < o.pos {
		o.err = fmt.Errorf("erofs writer: internal error: inode %d at %d overlaps %d", ino.nid, start, o.pos)
		return
	}
	o.padTo(start)

	typ := ino.typ()
	layout := uint16(LayoutFlatPlain)
	if ino.tail > 0 {
		layout = LayoutFlatInline
	}
	var iu uint32
	if ino.nBlocks > 0 {
		iu = dataStartBlk + ino.blk
	}
	var size uint64
	switch typ {
	case composefs.TypeDir:
		size = uint64(ino.nBlocks)*BlockSize + uint64(ino.tail)
	case composefs.TypeSymlink:
		size = ino.size
	case composefs.TypeRegular:
		size = ino.size
		if ino.external() {
			layout = LayoutChunkBased
			iu = iu&^0xFFFF | (wrChunkBits(size) - BlockSizeBits)
		}
	case composefs.TypeChar, composefs.TypeBlock:
		if ino.node != nil { // stubs have rdev 0
			iu = uint32(ino.node.Rdev)
		}
	}
	nShared, xsize := b.inodeXattrs(ino)
	var icount uint16
	if xsize > 0 {
		icount = uint16((xsize-XattrIbodyHeaderSize)/4 + 1)
	}
	mode := uint16(ino.mode)
	if ino.compact {
		p := o.space(InodeCompactSize)
		wrLE.PutUint16(p[0:], layout<<1)
		wrLE.PutUint16(p[2:], icount)
		wrLE.PutUint16(p[4:], mode)
		wrLE.PutUint16(p[6:], uint16(ino.nlink))
		wrLE.PutUint32(p[8:], uint32(size))
		wrLE.PutUint32(p[12:], 0)
		wrLE.PutUint32(p[16:], iu)
		wrLE.PutUint32(p[20:], uint32(idx))
		wrLE.PutUint16(p[24:], uint16(ino.uid))
		wrLE.PutUint16(p[26:], uint16(ino.gid))
		wrLE.PutUint32(p[28:], 0)
	} else {
		p := o.space(InodeExtendedSize)
		clear(p)
		wrLE.PutUint16(p[0:], layout<<1|1)
		wrLE.PutUint16(p[2:], icount)
		wrLE.PutUint16(p[4:], mode)
		wrLE.PutUint64(p[8:], size)
		wrLE.PutUint32(p[16:], iu)
		wrLE.PutUint32(p[20:], uint32(idx))
		wrLE.PutUint32(p[24:], ino.uid)
		wrLE.PutUint32(p[28:], ino.gid)
		wrLE.PutUint64(p[32:], uint64(ino.mtime.Sec))
		wrLE.PutUint32(p[40:], ino.mtime.Nsec)
		wrLE.PutUint32(p[44:], ino.nlink)
	}

	if xsize > 0 {
		ids := b.xids[ino.xStart : ino.xStart+ino.xLen]
		var filter uint32
		for _, id := range ids {
			filter |= 1 << b.xattrs[id].filterBit
		}
		hdr := o.space(XattrIbodyHeaderSize)
		clear(hdr)
		wrLE.PutUint32(hdr[0:], ^filter)
		hdr[4] = uint8(nShared)
		base := b.inodesEnd % BlockSize
		n := 0
		for _, id := range ids {
			x := &b.xattrs[id]
			if x.shared >= 0 && n < nShared {
				n++
				wrLE.PutUint32(o.space(4), uint32((base+uint64(x.shared))/4))
			}
		}
		n = 0
		for _, id := range ids {
			x := &b.xattrs[id]
			if x.shared >= 0 && n < nShared {
				n++
				continue
			}
			b.emitXattr(o, x)
		}
	}

	if ino.tail > 0 {
		switch typ {
		case composefs.TypeDir:
			ents := b.dirents[ino.dirStart : ino.dirStart+ino.dirLen]
			chunk := 0
			wrDirChunks(ents, func(from, to int, size uint32) {
				if chunk >= int(ino.nBlocks) && size > 0 {
					b.emitDirents(o, ents[from:to])
				}
				chunk++
			})
		case composefs.TypeSymlink:
			o.write(ino.node.Payload)
		case composefs.TypeRegular:
			if ino.external() {
				o.fill(0xFF, uint64(ino.tail))
			} else {
				c := ino.node.Content
				o.writeBytes(c[len(c)-int(ino.tail):])
			}
		}
	}
	if want := start + uint64(b.inodeSize(ino)) + uint64(xsize) + uint64(ino.tail); o.pos != want && o.err == nil {
		o.err = fmt.Errorf("erofs writer: internal error: inode %d ends at %d, want %d", ino.nid, o.pos, want)
	}
}

func (b *wrBuilder) inodeSize(ino *wrInode) int {
	if ino.compact {
		return InodeCompactSize
	}
	return InodeExtendedSize
}

// emitXattr writes one xattr entry (spec §7.2).
func (b *wrBuilder) emitXattr(o *wrOutput, x *wrXattr) {
	suffix := x.suffix()
	value := x.value()
	hdr := o.space(XattrEntryHeaderSize)
	hdr[0] = uint8(len(suffix))
	hdr[1] = x.index
	wrLE.PutUint16(hdr[2:], uint16(len(value)))
	o.write(suffix)
	o.write(value)
	used := uint64(XattrEntryHeaderSize + len(suffix) + len(value))
	o.fill(0, uint64(x.entrySize)-used)
}

// emitDirents writes one block or tail of directory entries (spec §9).
func (b *wrBuilder) emitDirents(o *wrOutput, ents []wrDirent) {
	nameoff := uint16(len(ents) * DirentSize)
	for _, d := range ents {
		p := o.space(DirentSize)
		wrLE.PutUint64(p[0:], b.inodes[d.target].nid)
		wrLE.PutUint16(p[8:], nameoff)
		p[10] = FileType(b.inodes[d.target].mode)
		p[11] = 0
		nameoff += uint16(len(d.name))
	}
	for _, d := range ents {
		o.write(d.name)
	}
}

// emitData writes the data blocks of an inode (spec §10).
func (b *wrBuilder) emitData(o *wrOutput, ino *wrInode) {
	if ino.nBlocks == 0 {
		return
	}
	end := o.pos + uint64(ino.nBlocks)*BlockSize
	switch ino.typ() {
	case composefs.TypeDir:
		ents := b.dirents[ino.dirStart : ino.dirStart+ino.dirLen]
		chunk := 0
		wrDirChunks(ents, func(from, to int, size uint32) {
			if chunk < int(ino.nBlocks) && size > 0 {
				b.emitDirents(o, ents[from:to])
				o.padTo(wrRoundUp(o.pos, BlockSize))
			}
			chunk++
		})
	case composefs.TypeSymlink:
		o.write(ino.node.Payload)
	case composefs.TypeRegular:
		if ino.external() {
			o.fill(0xFF, uint64(ino.nBlocks)*BlockSize)
		} else {
			c := ino.node.Content
			n := min(uint64(len(c)), uint64(ino.nBlocks)*BlockSize)
			o.writeBytes(c[:n])
		}
	}
	o.padTo(end)
}
