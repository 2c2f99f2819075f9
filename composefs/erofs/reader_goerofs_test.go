package erofs

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"testing"

	goerofs "github.com/erofs/go-erofs"

	"github.com/cfs-dev/cfs/composefs"
)

// rdRawEntry is one directory entry of an image exactly as EROFS stores it:
// no overlay transformation, whiteout stubs included.
type rdRawEntry struct {
	path    string
	nid     uint64
	mode    uint32
	size    uint64
	nlink   uint32
	uid     uint32
	gid     uint32
	rdev    uint32 // i_u of character and block devices
	mtime   composefs.Timespec
	xattrs  map[string]string
	target  string // symlink target
	content []byte // data of a flat regular file
	flat    bool
}

// rdRawWalk lists every entry of the image depth-first ("/" first), using
// the reader's low-level decoding but none of its composefs semantics.
// Each directory is entered once.
func rdRawWalk(t *testing.T, img []byte) []rdRawEntry {
	t.Helper()
	im, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	w := im.newWalker(true)
	var out []rdRawEntry
	entered := map[uint64]bool{}
	var visit func(p string, nid uint64)
	visit = func(p string, nid uint64) {
		ino, err := im.inode(nid)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		e := rdRawEntry{
			path: p, nid: nid, mode: ino.mode, size: ino.size, nlink: ino.nlink,
			uid: ino.uid, gid: ino.gid, mtime: ino.mtime, xattrs: map[string]string{},
		}
		if t := ino.typ(); t == composefs.TypeChar || t == composefs.TypeBlock {
			e.rdev = ino.iu
		}
		if err := w.forEachXattr(ino, func(name, value string) error {
			e.xattrs[name] = value
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		switch ino.typ() {
		case composefs.TypeSymlink:
			b, err := im.flatData(ino)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			e.target = string(b)
		case composefs.TypeRegular:
			if ino.layout != LayoutChunkBased {
				e.flat = true
				if e.content, err = im.flatData(ino); err != nil {
					t.Fatalf("%s: %v", p, err)
				}
			}
		}
		out = append(out, e)
		if ino.typ() != composefs.TypeDir || entered[nid] {
			return
		}
		entered[nid] = true
		var children []rdDirent
		if err := im.flatChunks(ino, func(off int64, b []byte) error {
			return rdParseDirBlock(b, off, func(d rdDirent) error {
				if d.name != "." && d.name != ".." {
					children = append(children, d)
				}
				return nil
			})
		}); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, d := range children {
			visit(path.Join(p, d.name), d.nid)
		}
	}
	visit("/", uint64(im.Superblock.RootNid))
	return out
}

// rdGoFileMode converts a Linux st_mode to an fs.FileMode the way go-erofs
// does.
func rdGoFileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	switch mode & composefs.ModeTypeMask {
	case composefs.TypeDir:
		m |= fs.ModeDir
	case composefs.TypeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case composefs.TypeBlock:
		m |= fs.ModeDevice
	case composefs.TypeFifo:
		m |= fs.ModeNamedPipe
	case composefs.TypeSocket:
		m |= fs.ModeSocket
	case composefs.TypeSymlink:
		m |= fs.ModeSymlink
	}
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func rdDescribeRaw(e rdRawEntry) string {
	keys := slices.Sorted(maps.Keys(e.xattrs))
	var xs []string
	for _, k := range keys {
		xs = append(xs, fmt.Sprintf("%q=%q", k, e.xattrs[k]))
	}
	s := fmt.Sprintf("%q nid=%d mode=%v size=%d nlink=%d uid=%d gid=%d rdev=%d mtime=%d.%d xattrs=[%s]",
		e.path, e.nid, rdGoFileMode(e.mode), e.size, e.nlink, e.uid, e.gid, e.rdev, e.mtime.Sec, e.mtime.Nsec, strings.Join(xs, " "))
	if e.mode&composefs.ModeTypeMask == composefs.TypeSymlink {
		s += fmt.Sprintf(" target=%q", e.target)
	}
	if e.flat {
		s += fmt.Sprintf(" content=%q", e.content)
	}
	return s
}

// rdGoErofsWalk lists the same things as rdRawWalk, read with the independent
// github.com/erofs/go-erofs reader.
func rdGoErofsWalk(t *testing.T, img []byte) []string {
	t.Helper()
	fsys, err := goerofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		st, ok := info.Sys().(*goerofs.Stat)
		if !ok {
			return fmt.Errorf("%s: Sys() is %T, not *erofs.Stat", p, info.Sys())
		}
		e := rdRawEntry{
			path: "/" + p, nid: uint64(st.Ino), size: uint64(st.Size), nlink: uint32(st.Nlink),
			uid: st.UID, gid: st.GID, mtime: composefs.Timespec{Sec: int64(st.Mtime), Nsec: st.MtimeNs},
		}
		if p == "." {
			e.path = "/"
		}
		e.xattrs = map[string]string{}
		for k, v := range st.Xattrs {
			// go-erofs v0.3.1 names EROFS xattr indexes 2 and 3
			// "system.posix_acl_access." and "system.posix_acl_default."
			// (with a trailing dot); the kernel and libcomposefs use
			// the names without it.
			switch k {
			case XattrPosixACLAccess + ".", XattrPosixACLDefault + ".":
				k = strings.TrimSuffix(k, ".")
			}
			e.xattrs[k] = v
		}
		m := st.Mode
		if m&fs.ModeDevice != 0 {
			e.rdev = st.Rdev
		}
		var s string
		switch {
		case m.IsDir():
			s = rdDescribeGo(e, m)
		case m&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			e.target = target
			s = rdDescribeGo(e, m) + fmt.Sprintf(" target=%q", e.target)
		case m.IsRegular():
			s = rdDescribeGo(e, m)
			if st.InodeLayout != LayoutChunkBased {
				content, err := fs.ReadFile(fsys, p)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				s += fmt.Sprintf(" content=%q", content)
			}
		default:
			s = rdDescribeGo(e, m)
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func rdDescribeGo(e rdRawEntry, m fs.FileMode) string {
	keys := slices.Sorted(maps.Keys(e.xattrs))
	var xs []string
	for _, k := range keys {
		xs = append(xs, fmt.Sprintf("%q=%q", k, e.xattrs[k]))
	}
	return fmt.Sprintf("%q nid=%d mode=%v size=%d nlink=%d uid=%d gid=%d rdev=%d mtime=%d.%d xattrs=[%s]",
		e.path, e.nid, m, e.size, e.nlink, e.uid, e.gid, e.rdev, e.mtime.Sec, e.mtime.Nsec, strings.Join(xs, " "))
}

// TestGoErofsCrossCheck walks every golden image with go-erofs and with
// the reader's own decoding and requires the same raw entries: the same
// paths (root stubs included), nids, modes, sizes, owners, times, device
// numbers, raw xattrs (trusted.overlay.* included), symlink targets and
// inline content.
func TestGoErofsCrossCheck(t *testing.T) {
	for _, g := range rdGoldenImages(t) {
		t.Run(g.name, func(t *testing.T) {
			img := rdReadGolden(t, g.path)
			var mine []string
			raw := rdRawWalk(t, img)
			for _, e := range raw {
				mine = append(mine, rdDescribeRaw(e))
			}
			theirs := rdGoErofsWalk(t, img)
			// fs.WalkDir visits in lexical order, like the image stores.
			rdDiffLines(t, "raw entries (mine vs go-erofs)", mine, theirs)

			// The raw view and the composefs view differ exactly by
			// the overlay transformation of spec §12.
			rdCheckOverlay(t, raw, img)
		})
	}
}

// rdCheckOverlay relates the raw entries to the tree Read
// returns: dropped entries are exactly the char 0/0 inodes; the root has
// trusted.overlay.opaque=y and its stubs are 00..ff minus real entries;
// external files carry metacopy/redirect that become Digest/Payload;
// converted whiteouts come back as char 0/0.
func rdCheckOverlay(t *testing.T, raw []rdRawEntry, img []byte) {
	t.Helper()
	root, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*composefs.Node{}
	_ = root.Walk(func(p string, n *composefs.Node) error {
		nodes[p] = n.Target()
		return nil
	})
	stubs := 0
	for _, e := range raw {
		n := nodes[e.path]
		typ := e.mode & composefs.ModeTypeMask
		if typ == composefs.TypeChar && e.rdev == 0 {
			if n != nil {
				t.Errorf("%s: char 0/0 inode is in the tree", e.path)
			}
			dir, name := path.Split(e.path)
			if dir == "/" && len(name) == 2 && strings.Trim(name, "0123456789abcdef") == "" {
				stubs++
				if e.mode != composefs.TypeChar|0o644 {
					t.Errorf("%s: stub mode %o", e.path, e.mode)
				}
			}
			continue
		}
		if n == nil {
			t.Errorf("%s: in the image but not in the tree", e.path)
			continue
		}
		if e.path == "/" && e.xattrs[XattrOpaque] != "y" {
			t.Errorf("root lacks trusted.overlay.opaque=y: %q", e.xattrs)
		}
		if _, ok := e.xattrs[XattrEscapedWhiteout]; ok && typ == composefs.TypeRegular {
			if !n.IsWhiteout() {
				t.Errorf("%s: escaped whiteout file did not become a whiteout (mode %o)", e.path, n.Mode)
			}
			continue
		}
		if n.Mode != e.mode || n.Size != e.size || n.UID != e.uid || n.GID != e.gid || n.Nlink != e.nlink || n.Mtime != e.mtime {
			t.Errorf("%s: node %+v differs from raw inode %+v", e.path, n, e)
		}
		if v, ok := e.xattrs[XattrRedirect]; ok && typ == composefs.TypeRegular && n.Payload != strings.TrimPrefix(v, "/") {
			t.Errorf("%s: payload %q, redirect %q", e.path, n.Payload, v)
		}
		if v, ok := e.xattrs[XattrMetacopy]; ok && typ == composefs.TypeRegular && len(v) == 36 {
			if n.Digest == nil || string(n.Digest[:]) != v[4:] {
				t.Errorf("%s: digest %v, metacopy %x", e.path, n.Digest, v)
			}
		}
		for _, x := range n.Xattrs {
			// A trusted.overlay.* xattr in the tree can only come from
			// an escaped trusted.overlay.overlay.* one in the image.
			if rest, ok := strings.CutPrefix(x.Name, XattrOverlayPrefix); ok {
				if v, ok := e.xattrs[XattrOverlayEscapedPrefix+rest]; !ok || v != x.Value {
					t.Errorf("%s: tree xattr %s=%q has no escaped original in the image", e.path, x.Name, x.Value)
				}
			}
		}
	}
	if len(raw) > 0 && stubs == 0 {
		t.Error("no root whiteout stubs in the raw image")
	}
	real := 0
	for _, c := range root.Children {
		if len(c.Name) == 2 && strings.Trim(c.Name, "0123456789abcdef") == "" {
			real++
		}
	}
	if stubs+real != 256 {
		t.Errorf("%d stubs + %d real 00..ff root entries, want 256", stubs, real)
	}
}
