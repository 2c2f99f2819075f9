package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/internal/testutil"
)

var rdLE = binary.LittleEndian

// rdCraft builds small EROFS images by hand, valid or hostile, for tests:
// compact inodes at nids the test chooses, inline directory tails and
// inline file content.
type rdCraft struct{ buf []byte }

const rdCraftBuildTime = 1700000000

func rdNewCraft(blocks int) *rdCraft {
	c := &rdCraft{buf: make([]byte, blocks*BlockSize)}
	rdLE.PutUint32(c.buf[0:], ComposefsMagic)
	rdLE.PutUint32(c.buf[4:], ComposefsVersion)
	sb := c.buf[SuperblockOffset:]
	rdLE.PutUint32(sb[0:], SuperblockMagic)
	rdLE.PutUint32(sb[8:], FeatureCompat)
	sb[12] = BlockSizeBits
	rdLE.PutUint16(sb[14:], 36)
	rdLE.PutUint64(sb[24:], rdCraftBuildTime)
	rdLE.PutUint32(sb[36:], uint32(blocks))
	return c
}

func (c *rdCraft) bytes() []byte { return c.buf }

// inode writes a compact inode and returns the offset of the byte after it.
func (c *rdCraft) inode(nid uint64, mode uint32, size uint32, layout uint8, iu uint32) int64 {
	off := int64(nid) * InodeSlotSize
	b := c.buf[off:]
	rdLE.PutUint16(b[0:], uint16(layout)<<1)
	rdLE.PutUint16(b[4:], uint16(mode))
	nlink := uint16(1)
	if mode&composefs.ModeTypeMask == composefs.TypeDir {
		nlink = 2
	}
	rdLE.PutUint16(b[6:], nlink)
	rdLE.PutUint32(b[8:], size)
	rdLE.PutUint32(b[16:], iu)
	rdLE.PutUint32(b[20:], uint32(nid))
	return off + InodeCompactSize
}

type rdEnt struct {
	name  string
	nid   uint64
	ftype uint8
}

// rdDirBlock encodes entries (in the given order) as one directory block.
func rdDirBlock(ents []rdEnt) []byte {
	var hdr, names []byte
	nameoff := DirentSize * len(ents)
	for _, e := range ents {
		var d [DirentSize]byte
		rdLE.PutUint64(d[0:], e.nid)
		rdLE.PutUint16(d[8:], uint16(nameoff+len(names)))
		d[10] = e.ftype
		hdr = append(hdr, d[:]...)
		names = append(names, e.name...)
	}
	return append(hdr, names...)
}

// dir writes a directory inode with inline entries ".", ".." and ents
// (sorted by the caller when it wants a valid image).
func (c *rdCraft) dir(nid, parent uint64, ents ...rdEnt) {
	all := append([]rdEnt{{".", nid, FtDir}, {"..", parent, FtDir}}, ents...)
	slices.SortStableFunc(all, func(a, b rdEnt) int { return strings.Compare(a.name, b.name) })
	c.rawDir(nid, rdDirBlock(all))
}

// rawDir writes a directory inode whose inline tail is block.
func (c *rdCraft) rawDir(nid uint64, block []byte) {
	off := c.inode(nid, composefs.TypeDir|0o755, uint32(len(block)), LayoutFlatInline, 0)
	copy(c.buf[off:], block)
}

// file writes a regular file with inline content.
func (c *rdCraft) file(nid uint64, content string) {
	layout := uint8(LayoutFlatPlain)
	if content != "" {
		layout = LayoutFlatInline
	}
	off := c.inode(nid, composefs.TypeRegular|0o644, uint32(len(content)), layout, 0)
	copy(c.buf[off:], content)
}

func rdReadBytes(b []byte) (*composefs.Node, error) {
	return Read(bytes.NewReader(b), int64(len(b)))
}

// rdWantFormatError checks that err is a *FormatError of the given class
// whose message contains want.
func rdWantFormatError(t *testing.T, err error, class error, want string) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) || !errors.Is(err, class) {
		t.Fatalf("error = %v (%T), want a *FormatError matching %v", err, err, class)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not mention %q", err, want)
	}
}

// rdCraftedValid is a small hand-made image: a directory, a file with
// inline content and a hardlink to it, a symlink and a root whiteout stub.
func rdCraftedValid() []byte {
	c := rdNewCraft(4)
	c.dir(36, 36,
		rdEnt{"00", 68, FtChrdev},
		rdEnt{"dir", 44, FtDir},
		rdEnt{"file", 52, FtRegular},
		rdEnt{"link", 60, FtSymlink},
		rdEnt{"same", 52, FtRegular},
	)
	c.dir(44, 36, rdEnt{"inner", 76, FtRegular})
	c.file(52, "hello")
	copy(c.buf[c.inode(60, composefs.TypeSymlink|0o777, 4, LayoutFlatInline, 0):], "file")
	c.inode(68, composefs.TypeChar|0o644, 0, LayoutFlatPlain, 0)
	c.file(76, "")
	return c.bytes()
}

// TestReadCrafted reads a small hand-made image: the reader does not
// depend on mkcomposefs's exact layout.
func TestReadCrafted(t *testing.T) {
	root, err := rdReadBytes(rdCraftedValid())
	if err != nil {
		t.Fatal(err)
	}
	got := rdDescribeTree(root)
	const mt = "mtime=1700000000.0"
	want := []string{
		`"/" size=104 mode=40755 nlink=2 uid=0 gid=0 rdev=0 ` + mt + ` payload="" content="" digest=- xattrs=[]`,
		`"/dir" size=44 mode=40755 nlink=2 uid=0 gid=0 rdev=0 ` + mt + ` payload="" content="" digest=- xattrs=[]`,
		`"/dir/inner" size=0 mode=100644 nlink=1 uid=0 gid=0 rdev=0 ` + mt + ` payload="" content="" digest=- xattrs=[]`,
		`"/file" size=5 mode=100644 nlink=1 uid=0 gid=0 rdev=0 ` + mt + ` payload="" content="hello" digest=- xattrs=[]`,
		`"/link" size=4 mode=120777 nlink=1 uid=0 gid=0 rdev=0 ` + mt + ` payload="file" content="" digest=- xattrs=[]`,
		`"/same" hardlink -> "/file"`,
	}
	rdDiffLines(t, "crafted tree", got, want)
}

// TestFsckCrafted checks that the hand-made base image is sound EROFS for
// fsck.erofs, so the corruptions built on the same helpers start from a
// valid base.
func TestFsckCrafted(t *testing.T) {
	fsck := testutil.RequireTool(t, "fsck.erofs")
	p := filepath.Join(t.TempDir(), "crafted.img")
	if err := os.WriteFile(p, rdCraftedValid(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(fsck, p).CombinedOutput(); err != nil {
		t.Errorf("fsck.erofs rejects the crafted image: %v\n%s", err, out)
	}
}

// TestReadCraftedHostile checks hand-made hostile images: each must fail
// with a FormatError (and, by running at all, not hang or panic).
func TestReadCraftedHostile(t *testing.T) {
	tests := []struct {
		name string
		img  func() []byte
		want string
	}{
		{"dir contains itself", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"self", 36, FtDir})
			return c.bytes()
		}, "referenced a second time"},
		{"dir contains its parent", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"a", 44, FtDir})
			c.dir(44, 36, rdEnt{"up", 36, FtDir})
			return c.bytes()
		}, "referenced a second time"},
		{"hardlinked directory", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"a", 44, FtDir}, rdEnt{"b", 44, FtDir})
			c.dir(44, 36)
			return c.bytes()
		}, "referenced a second time"},
		{"rdDirent file type differs from inode", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtDir})
			c.file(44, "")
			return c.bytes()
		}, "file type"},
		{"entries out of order", func() []byte {
			c := rdNewCraft(2)
			c.rawDir(36, rdDirBlock([]rdEnt{{".", 36, FtDir}, {"..", 36, FtDir}, {"b", 44, FtRegular}, {"a", 52, FtRegular}}))
			c.file(44, "")
			c.file(52, "")
			return c.bytes()
		}, "out of order"},
		{"repeated name", func() []byte {
			c := rdNewCraft(2)
			c.rawDir(36, rdDirBlock([]rdEnt{{".", 36, FtDir}, {"..", 36, FtDir}, {"a", 44, FtRegular}, {"a", 52, FtRegular}}))
			c.file(44, "")
			c.file(52, "")
			return c.bytes()
		}, "repeated"},
		{"name with a slash", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"a/b", 44, FtRegular})
			c.file(44, "")
			return c.bytes()
		}, "contains '/'"},
		{"rdDirent nid outside the image", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"far", 1 << 40, FtRegular})
			return c.bytes()
		}, "outside the image"},
		{"root nid outside the image", func() []byte {
			c := rdNewCraft(2)
			rdLE.PutUint16(c.buf[SuperblockOffset+14:], 0xffff)
			return c.bytes()
		}, "outside the image"},
		{"root is a file", func() []byte {
			c := rdNewCraft(2)
			c.file(36, "x")
			return c.bytes()
		}, "not a directory"},
		{"huge rdDirent count", func() []byte {
			c := rdNewCraft(2)
			blk := make([]byte, 4092)
			rdLE.PutUint16(blk[8:], 4092) // 341 entries, garbage name offsets
			c.rawDir(36, blk[:200])
			return c.bytes()
		}, "name offset"},
		{"symlink target outside the image", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"l", 44, FtSymlink})
			c.inode(44, composefs.TypeSymlink|0o777, 100, LayoutFlatPlain, 1000)
			return c.bytes()
		}, "outside the image"},
		{"inline tail crosses a block", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 126, FtRegular})
			c.inode(126, composefs.TypeRegular|0o644, 100, LayoutFlatInline, 0)
			return c.bytes()
		}, "crosses a block boundary"},
		{"inline content over 5000 bytes", func() []byte {
			c := rdNewCraft(4)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.inode(44, composefs.TypeRegular|0o644, 5001, LayoutFlatPlain, 1)
			return c.bytes()
		}, "larger than 5000"},
		{"compressed layout", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.inode(44, composefs.TypeRegular|0o644, 100, 3, 0)
			return c.bytes()
		}, "compressed"},
		{"huge xattr count", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.file(44, "")
			rdLE.PutUint16(c.buf[44*32+2:], 0xffff)
			return c.bytes()
		}, "extend past the end"},
		{"shared xattr count beyond the xattr area", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.file(44, "")
			rdLE.PutUint16(c.buf[44*32+2:], 2) // 16-byte ibody
			c.buf[44*32+32+4] = 255            // 255 shared ids
			return c.bytes()
		}, "shared xattr ids do not fit"},
		{"shared xattr id outside the image", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.file(44, "")
			rdLE.PutUint16(c.buf[44*32+2:], 2)
			c.buf[44*32+32+4] = 1
			rdLE.PutUint32(c.buf[44*32+32+12:], 0xffffffff)
			return c.bytes()
		}, "outside the image"},
		{"inline xattr overruns its area", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.file(44, "")
			rdLE.PutUint16(c.buf[44*32+2:], 3) // 20-byte ibody: 8 bytes of entries
			e := c.buf[44*32+32+12:]
			e[0], e[1] = 1, 1 // user.a
			rdLE.PutUint16(e[2:], 1000)
			return c.bytes()
		}, "overruns"},
		{"xattr name index out of range", func() []byte {
			c := rdNewCraft(2)
			c.dir(36, 36, rdEnt{"f", 44, FtRegular})
			c.file(44, "")
			rdLE.PutUint16(c.buf[44*32+2:], 3)
			e := c.buf[44*32+32+12:]
			e[0], e[1], e[4] = 1, 0x85, 'a'
			return c.bytes()
		}, "xattr name index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.img()
			_, err := rdReadBytes(img)
			class := ErrCorrupt
			if strings.Contains(tt.want, "compressed") || strings.Contains(tt.want, "index") {
				class = ErrUnsupported
			}
			rdWantFormatError(t, err, class, tt.want)
			// Objects walks the same structure and must not do better.
			if _, err := Objects(bytes.NewReader(img), int64(len(img))); err == nil && !strings.Contains(tt.name, "symlink") &&
				!strings.Contains(tt.name, "inline tail") {
				t.Errorf("Objects accepted the image")
			}
		})
	}
}

// TestReadDepthLimit nests directories just below and just above the
// reader's depth limit.
func TestReadDepthLimit(t *testing.T) {
	build := func(levels int) []byte {
		// One 128-byte slot per directory: a 32-byte inode and a tail of
		// ".", "..", "d" (40 bytes); 32 slots per block.
		blocks := (36*32+levels*128)/BlockSize + 2
		c := rdNewCraft(blocks)
		nid := func(i int) uint64 { return 36 + uint64(i)*4 }
		for i := range levels {
			parent := nid(max(i-1, 0))
			if i == levels-1 {
				c.dir(nid(i), parent)
			} else {
				c.dir(nid(i), parent, rdEnt{"d", nid(i + 1), FtDir})
			}
		}
		return c.bytes()
	}
	root, err := rdReadBytes(build(readerMaxDepth))
	if err != nil {
		t.Fatalf("%d levels: %v", readerMaxDepth, err)
	}
	depth := 0
	for n := root; len(n.Children) > 0; n = n.Children[0] {
		depth++
	}
	if depth != readerMaxDepth-1 {
		t.Errorf("read %d levels below the root, want %d", depth, readerMaxDepth-1)
	}
	_, err = rdReadBytes(build(readerMaxDepth + 1))
	rdWantFormatError(t, err, ErrCorrupt, "nested deeper")
}

// TestReadAmplification checks the work budgets: directories sharing one
// rdDirent block, and files sharing their data, cannot multiply the work
// beyond what the image size allows.
func TestReadAmplification(t *testing.T) {
	t.Run("shared directory blocks", func(t *testing.T) {
		// 200 directories whose data is the same block of 250 entries.
		c := rdNewCraft(16)
		var rootEnts []rdEnt
		for i := range 200 {
			rootEnts = append(rootEnts, rdEnt{fmt.Sprintf("d%03d", i), 100 + uint64(i), FtDir})
		}
		// The root needs a full block: 200*16+27 bytes.
		all := append([]rdEnt{{".", 36, FtDir}, {"..", 36, FtDir}}, rootEnts...)
		blk := rdDirBlock(all)
		c.inode(36, composefs.TypeDir|0o755, uint32(len(blk)), LayoutFlatPlain, 14)
		copy(c.buf[14*BlockSize:], blk)
		var shared []rdEnt
		for i := range 250 {
			shared = append(shared, rdEnt{fmt.Sprintf("f%03d", i), 40, FtRegular})
		}
		sblk := rdDirBlock(shared)
		copy(c.buf[15*BlockSize:], sblk)
		for i := range 200 {
			c.inode(100+uint64(i), composefs.TypeDir|0o755, uint32(len(sblk)), LayoutFlatPlain, 15)
		}
		c.file(40, "")
		_, err := rdReadBytes(c.bytes())
		rdWantFormatError(t, err, ErrCorrupt, "more directory entries than the image can hold")
	})
	t.Run("shared file data", func(t *testing.T) {
		// 250 files of 5000 bytes whose data is the same two blocks.
		c := rdNewCraft(10)
		var ents []rdEnt
		for i := range 250 {
			ents = append(ents, rdEnt{fmt.Sprintf("f%03d", i), 100 + uint64(i), FtRegular})
		}
		all := append([]rdEnt{{".", 36, FtDir}, {"..", 36, FtDir}}, ents...)
		blk := rdDirBlock(all)
		c.inode(36, composefs.TypeDir|0o755, uint32(len(blk)), LayoutFlatPlain, 7)
		copy(c.buf[7*BlockSize:], blk)
		for i := range 250 {
			c.inode(100+uint64(i), composefs.TypeRegular|0o644, 5000, LayoutFlatPlain, 8)
		}
		_, err := rdReadBytes(c.bytes())
		rdWantFormatError(t, err, ErrCorrupt, "more data than it holds")
		// Objects does not copy content, so it succeeds here.
		if _, err := Objects(bytes.NewReader(c.bytes()), int64(len(c.bytes()))); err != nil {
			t.Errorf("Objects: %v", err)
		}
	})
}

// TestReadStubReferencedTwice: a whiteout inode named twice is dropped
// both times (upstream would use freed memory the second time).
func TestReadStubReferencedTwice(t *testing.T) {
	c := rdNewCraft(2)
	c.dir(36, 36, rdEnt{"w1", 44, FtChrdev}, rdEnt{"w2", 44, FtChrdev}, rdEnt{"x", 52, FtRegular})
	c.inode(44, composefs.TypeChar|0o644, 0, LayoutFlatPlain, 0)
	c.file(52, "")
	root, err := rdReadBytes(c.bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Children) != 1 || root.Children[0].Name != "x" {
		t.Errorf("children = %v, want only x", root.Children)
	}
}

// rdGoldenLayout locates structures of golden basic/image.cfs for the
// corruption tests below.
type rdGoldenLayout struct {
	img       []byte
	rootOff   int64 // root inode
	rootBlock int64 // offset of the root's first rdDirent block
	fileEnt   int64 // offset of the rdDirent of /a (a directory)
	aNid      uint64
	aBlockOff int64 // offset of /a's inline dirents
	abEnt     int64 // offset of the rdDirent of /a/b in /a
}

func rdBasicLayout(t *testing.T) rdGoldenLayout {
	t.Helper()
	img := rdReadGolden(t, filepath.Join(testutil.GoldenDir(t), "basic", "image.cfs"))
	im, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := im.inode(uint64(im.Superblock.RootNid))
	if err != nil {
		t.Fatal(err)
	}
	if root.layout != LayoutFlatPlain {
		t.Fatalf("root layout %d, want FLAT_PLAIN (one full block)", root.layout)
	}
	l := rdGoldenLayout{img: img, rootOff: root.off, rootBlock: int64(root.iu) * BlockSize}
	find := func(ino *rdInode, name string) (rdDirent, int64) {
		var found rdDirent
		var blockOff int64 = -1
		if err := im.flatChunks(ino, func(off int64, b []byte) error {
			return rdParseDirBlock(b, off, func(d rdDirent) error {
				if d.name == name {
					found, blockOff = d, off
				}
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		if blockOff < 0 {
			t.Fatalf("no entry %q", name)
		}
		return found, blockOff
	}
	a, _ := find(root, "a")
	l.fileEnt, l.aNid = a.off, a.nid
	aIno, err := im.inode(a.nid)
	if err != nil {
		t.Fatal(err)
	}
	b, blockOff := find(aIno, "b")
	l.abEnt, l.aBlockOff = b.off, blockOff
	return l
}

// TestReadCorruptGolden damages golden basic/image.cfs in specific places.
func TestReadCorruptGolden(t *testing.T) {
	l := rdBasicLayout(t)
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		class  error
		want   string
	}{
		{"header magic", func(b []byte) []byte { b[0] ^= 0xff; return b }, ErrCorrupt, "composefs magic"},
		{"header version", func(b []byte) []byte { b[4] = 2; return b }, ErrUnsupported, "header version"},
		{"superblock magic", func(b []byte) []byte { b[SuperblockOffset] ^= 1; return b }, ErrCorrupt, "superblock magic"},
		{"block size", func(b []byte) []byte { b[SuperblockOffset+12] = 13; return b }, ErrUnsupported, "block size"},
		{"incompat feature", func(b []byte) []byte { b[SuperblockOffset+80] = 0x1; return b }, ErrUnsupported, "incompatible"},
		{"blocks beyond the file", func(b []byte) []byte { rdLE.PutUint32(b[SuperblockOffset+36:], 1000); return b }, ErrCorrupt, "truncated"},
		{"meta_blkaddr outside", func(b []byte) []byte { rdLE.PutUint32(b[SuperblockOffset+40:], 1000); return b }, ErrCorrupt, "meta_blkaddr"},
		{"root nid outside", func(b []byte) []byte { rdLE.PutUint16(b[SuperblockOffset+14:], 0xffff); return b }, ErrCorrupt, "outside the image"},
		{"root nid on a stub", func(b []byte) []byte { rdLE.PutUint16(b[SuperblockOffset+14:], 38); return b }, ErrCorrupt, "not a directory"},
		{"root size huge", func(b []byte) []byte { rdLE.PutUint32(b[l.rootOff+8:], 0xffffffff); return b }, ErrCorrupt, "larger than the image"},
		{"root data block outside", func(b []byte) []byte { rdLE.PutUint32(b[l.rootOff+16:], 0xfffffff); return b }, ErrCorrupt, "outside the image"},
		{"root mode not a type", func(b []byte) []byte { rdLE.PutUint16(b[l.rootOff+4:], 0o755); return b }, ErrCorrupt, "no valid file type"},
		{"i_format unknown bits", func(b []byte) []byte { b[l.rootOff] |= 0x40; return b }, ErrUnsupported, "i_format"},
		{"first nameoff not a multiple of 12", func(b []byte) []byte { rdLE.PutUint16(b[l.rootBlock+8:], 13); return b }, ErrCorrupt, "first name offset"},
		{"first nameoff zero", func(b []byte) []byte { rdLE.PutUint16(b[l.rootBlock+8:], 0); return b }, ErrCorrupt, "first name offset"},
		{"first nameoff beyond the block", func(b []byte) []byte { rdLE.PutUint16(b[l.rootBlock+8:], 4104); return b }, ErrCorrupt, "first name offset"},
		{"nameoff beyond the block", func(b []byte) []byte { rdLE.PutUint16(b[l.rootBlock+12+8:], 0xffff); return b }, ErrCorrupt, "out of range"},
		{"nameoff going backwards", func(b []byte) []byte {
			rdLE.PutUint16(b[l.fileEnt+8:], rdLE.Uint16(b[l.fileEnt+8:])+3)
			return b
		}, ErrCorrupt, "out of range"},
		{"rdDirent nid outside", func(b []byte) []byte { rdLE.PutUint64(b[l.fileEnt:], 1<<50); return b }, ErrCorrupt, "outside the image"},
		{"rdDirent points at the root", func(b []byte) []byte { rdLE.PutUint64(b[l.fileEnt:], 36); return b }, ErrCorrupt, "referenced a second time"},
		{"/a/b points at /a", func(b []byte) []byte { rdLE.PutUint64(b[l.abEnt:], l.aNid); return b }, ErrCorrupt, "referenced a second time"},
		{"xattr count huge", func(b []byte) []byte { rdLE.PutUint16(b[l.rootOff+2:], 0xffff); return b }, ErrCorrupt, "extend past the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(slices.Clone(l.img))
			_, err := rdReadBytes(b)
			rdWantFormatError(t, err, tt.class, tt.want)
			if _, err := Objects(bytes.NewReader(b), int64(len(b))); err == nil {
				t.Error("Objects accepted the image")
			}
		})
	}
	// The path of the offending entry is reported.
	b := slices.Clone(l.img)
	rdLE.PutUint64(b[l.abEnt:], l.aNid)
	_, err := rdReadBytes(b)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Path != "/a/b" || fe.Offset != l.abEnt {
		t.Errorf("error %v: want Path /a/b and Offset %d", err, l.abEnt)
	}
}

// rdShortReaderAt serves only the first n bytes of b although the caller
// claims a larger size.
type rdShortReaderAt struct {
	b []byte
	n int64
}

func (r rdShortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.n {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:min(int64(len(r.b)), r.n)])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// rdFailingReaderAt fails every read with err.
type rdFailingReaderAt struct{ err error }

func (r rdFailingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, r.err }

// TestReadTruncated cuts golden images at many lengths, both by passing a
// smaller size and by a reader that ends early.
func TestReadTruncated(t *testing.T) {
	for _, name := range []string{"basic/image.cfs", "xattrs/image.cfs", "symlinks/image.cfs"} {
		img := rdReadGolden(t, filepath.Join(testutil.GoldenDir(t), name))
		cuts := []int{0, 1, 31, 32, 1024, 1100, 1152, 4095, 4096, 4097, 8192, len(img) - 4096, len(img) - 1}
		for _, n := range cuts {
			if _, err := Read(bytes.NewReader(img[:n]), int64(n)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s cut to %d bytes: err = %v, want ErrCorrupt", name, n, err)
			}
			if n < 4096 {
				continue
			}
			_, err := Read(rdShortReaderAt{img, int64(n)}, int64(len(img)))
			rdWantFormatError(t, err, ErrCorrupt, "truncated")
		}
	}
	ioErr := errors.New("disk on fire")
	_, err := Read(rdFailingReaderAt{ioErr}, 1<<20)
	if !errors.Is(err, ioErr) || errors.Is(err, ErrCorrupt) {
		t.Errorf("I/O error: got %v, want the reader's error, not ErrCorrupt", err)
	}
}
