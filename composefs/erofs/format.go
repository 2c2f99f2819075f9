// Package erofs writes composefs EROFS images byte-for-byte as upstream
// mkcomposefs 1.0.8 does, and reads them back into a composefs tree.
//
// This file holds the on-disk constants shared by the writer and the
// reader (spec: ../shared/spec/composefs-image-format.md §7–§11).
package erofs

import "github.com/cfs-dev/cfs/composefs"

// Block and slot sizes.
const (
	BlockSize     = 4096
	BlockSizeBits = 12
	InodeSlotSize = 32
)

// composefs header (offset 0, 32 bytes).
const (
	ComposefsMagic      uint32 = 0xd078629a
	ComposefsVersion    uint32 = 1 // LCFS_EROFS_VERSION
	ComposefsHeaderSize        = 32
	FlagHasACL          uint32 = 1 << 0
	// MaxFormatVersion is the highest composefs format version (the
	// header's composefs_version field) the writer produces.
	MaxFormatVersion = 1
)

// EROFS superblock (offset 1024, 128 bytes).
const (
	SuperblockOffset                = 1024
	SuperblockSize                  = 128
	SuperblockMagic          uint32 = 0xE0F5E1E2
	FeatureCompatMtime              = 0x2
	FeatureCompatXattrFilter        = 0x4
	FeatureCompat                   = FeatureCompatMtime | FeatureCompatXattrFilter
)

// Inode formats and data layouts (i_format = layout<<1 | extended).
const (
	InodeCompactSize  = 32
	InodeExtendedSize = 64

	LayoutFlatPlain  = 0
	LayoutFlatInline = 2
	LayoutChunkBased = 4

	// ChunkFormatBlkbitsMask is the chunk size bits field of i_u for
	// chunk-based inodes.
	ChunkFormatBlkbitsMask = 0x001F
	// NullAddr is EROFS_NULL_ADDR: a hole in a chunk map.
	NullAddr uint32 = 0xFFFFFFFF
)

// Directory entries.
const (
	DirentSize = 12

	FtUnknown = 0
	FtRegular = 1
	FtDir     = 2
	FtChrdev  = 3
	FtBlkdev  = 4
	FtFifo    = 5
	FtSock    = 6
	FtSymlink = 7
)

// Extended attributes.
const (
	XattrIbodyHeaderSize = 12
	XattrEntryHeaderSize = 4
	// XattrFilterSeed is the xxh32 seed base of the name bloom filter; the
	// name index is added to it.
	XattrFilterSeed uint32 = 0x25BBE08F
	// MaxSharedXattrsPerInode is the most shared ids one inode references.
	MaxSharedXattrsPerInode = 128
)

// XattrPrefix is one entry of the xattr name prefix table.
type XattrPrefix struct {
	Index  uint8
	Prefix string
}

// XattrPrefixes is the writer's prefix table in match order (§7.1).
// Index 5 (lustre.) is deliberately absent: libcomposefs never uses it.
var XattrPrefixes = []XattrPrefix{
	{1, "user."},
	{2, "system.posix_acl_access"},
	{3, "system.posix_acl_default"},
	{4, "trusted."},
	{6, "security."},
}

// ReaderXattrPrefixes maps every EROFS name index a reader may meet to its
// prefix (index 0 has none).
var ReaderXattrPrefixes = map[uint8]string{
	0: "",
	1: "user.",
	2: "system.posix_acl_access",
	3: "system.posix_acl_default",
	4: "trusted.",
	5: "lustre.",
	6: "security.",
}

// Names of the overlayfs xattrs composefs adds or escapes.
const (
	XattrOverlayPrefix        = "trusted.overlay."
	XattrOverlayEscapedPrefix = "trusted.overlay.overlay."
	XattrMetacopy             = "trusted.overlay.metacopy"
	XattrRedirect             = "trusted.overlay.redirect"
	XattrOpaque               = "trusted.overlay.opaque"
	XattrEscapedWhiteout      = "trusted.overlay.overlay.whiteout"
	XattrEscapedWhiteouts     = "trusted.overlay.overlay.whiteouts"
	XattrEscapedOpaque        = "trusted.overlay.overlay.opaque"
	XattrUserOverlayWhiteout  = "user.overlay.whiteout"
	XattrUserOverlayWhiteouts = "user.overlay.whiteouts"
	XattrUserOverlayOpaque    = "user.overlay.opaque"
	XattrPosixACLAccess       = "system.posix_acl_access"
	XattrPosixACLDefault      = "system.posix_acl_default"
	XattrSelinux              = "security.selinux"
)

// FileType returns the directory entry file type (Ft*) of a mode.
func FileType(mode uint32) uint8 {
	switch mode & composefs.ModeTypeMask {
	case composefs.TypeRegular:
		return FtRegular
	case composefs.TypeDir:
		return FtDir
	case composefs.TypeChar:
		return FtChrdev
	case composefs.TypeBlock:
		return FtBlkdev
	case composefs.TypeFifo:
		return FtFifo
	case composefs.TypeSocket:
		return FtSock
	case composefs.TypeSymlink:
		return FtSymlink
	}
	return FtUnknown
}
