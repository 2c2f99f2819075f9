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
	"reflect"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// Published xxh32 vectors: the xxHash reference implementation's sanity
// checks (a generated buffer, seeds 0 and PRIME32_1) and strings checked
// with `xxhsum -H0`.
func TestXXH32(t *testing.T) {
	// The reference sanity buffer: byteGen starts at PRIME32_1 and is
	// multiplied by PRIME64_1 after each byte, whose value is its top byte.
	sanity := make([]byte, 222)
	gen := uint64(2654435761)
	for i := range sanity {
		sanity[i] = byte(gen >> 56)
		gen *= 11400714785074694797
	}
	const prime = 2654435761
	for _, tc := range []struct {
		in   []byte
		seed uint32
		want uint32
	}{
		{nil, 0, 0x02CC5D05},
		{nil, prime, 0x36B78AE7},
		{sanity[:1], 0, 0xCF65B03E},
		{sanity[:1], prime, 0xB4545AA4},
		{sanity[:14], 0, 0x1208E7E2},
		{sanity[:14], prime, 0x6AF1D1FE},
		{sanity[:222], 0, 0x5BD11DBD},
		{sanity[:222], prime, 0x58803C5F},
		{[]byte("a"), 0, 0x550d7456},
		{[]byte("abc"), 0, 0x32d153ff},
		{[]byte("0123456789abcdef"), 0, 0xc2c45b69},
		{[]byte("overlay.opaque"), 0, 0x89ea8154},
		{[]byte("The quick brown fox jumps over the lazy dog"), 0, 0xe85ea4de},
		{[]byte("Nobody inspects the spammish repetition"), 0, 0xe2293b2f},
	} {
		if got := xxh32(tc.in, tc.seed); got != tc.want {
			t.Errorf("xxh32(%q, %#x) = %#08x, want %#08x", tc.in, tc.seed, got, tc.want)
		}
		if got := xxh32(string(tc.in), tc.seed); got != tc.want {
			t.Errorf("xxh32(string %q, %#x) = %#08x, want %#08x", tc.in, tc.seed, got, tc.want)
		}
	}
	// Spec §7.4: the root's only xattr trusted.overlay.opaque (index 4,
	// suffix "overlay.opaque") gives the name filter bytes ff ff ef ff
	// (golden empty/image.cfs at 1184), i.e. the le32 value 0xffefffff:
	// bit 20 is clear. (The spec prints the bytes as "0xffffefff".)
	bit := xxh32("overlay.opaque", XattrFilterSeed+4) & 31
	if filter := ^uint32(1 << bit); filter != 0xffefffff {
		t.Errorf("filter of trusted.overlay.opaque = %#08x, want 0xffefffff", filter)
	}
}

// wtDir returns a directory node.
func wtDir(name string, mtime int64) *composefs.Node {
	n := composefs.NewNode(name, composefs.TypeDir|0o755)
	n.Mtime = composefs.Timespec{Sec: mtime}
	return n
}

func wtFile(name string, content string, mtime int64) *composefs.Node {
	n := composefs.NewNode(name, composefs.TypeRegular|0o644)
	n.Size = uint64(len(content))
	n.Content = []byte(content)
	n.Mtime = composefs.Timespec{Sec: mtime}
	return n
}

// wtExternal returns a regular file whose content lives in the object
// store, named by the digest of data.
func wtExternal(name, data string, mtime int64) *composefs.Node {
	n := composefs.NewNode(name, composefs.TypeRegular|0o644)
	d := fsverity.DigestBytes([]byte(data))
	n.Size = uint64(len(data))
	n.Digest = &d
	n.Payload = d.ObjectPath()
	n.Mtime = composefs.Timespec{Sec: mtime}
	return n
}

func wtAdd(t testing.TB, dir *composefs.Node, children ...*composefs.Node) {
	t.Helper()
	for _, c := range children {
		if err := dir.AddChild(c); err != nil {
			t.Fatal(err)
		}
	}
}

func wtWrite(t testing.TB, root *composefs.Node, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	d, err := Write(&buf, root, opts)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if want := fsverity.DigestBytes(buf.Bytes()); d != want {
		t.Fatalf("Write returned digest %s, image digest is %s", d, want)
	}
	return buf.Bytes()
}

// wtFsck runs the real fsck.erofs on an image.
func wtFsck(t *testing.T, img []byte) {
	t.Helper()
	tool := testutil.RequireTool(t, "fsck.erofs")
	p := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, p).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, out)
	}
}

// TestWriteEmptyByHand builds the golden "empty" tree by hand and checks
// the bytes against upstream and the fields of the spec §11 example.
func TestWriteEmptyByHand(t *testing.T) {
	root := wtDir("", 1700000000)
	root.Nlink = 2
	img := wtWrite(t, root, DefaultWriteOptions())
	want, err := os.ReadFile(filepath.Join(testutil.GoldenDir(t), "empty", "image.cfs"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, want) {
		t.Fatalf("image differs from golden empty/image.cfs (%d vs %d bytes)", len(img), len(want))
	}

	le := binary.LittleEndian
	if len(img) != 16384 {
		t.Fatalf("size %d, want 16384", len(img))
	}
	checks := []struct {
		what      string
		got, want uint64
	}{
		{"header magic", uint64(le.Uint32(img[0:])), uint64(ComposefsMagic)},
		{"header version", uint64(le.Uint32(img[4:])), 1},
		{"header flags", uint64(le.Uint32(img[8:])), 0},
		{"composefs_version", uint64(le.Uint32(img[12:])), 0},
		{"sb magic", uint64(le.Uint32(img[1024:])), uint64(SuperblockMagic)},
		{"feature_compat", uint64(le.Uint32(img[1024+8:])), 6},
		{"blkszbits", uint64(img[1024+12]), 12},
		{"root_nid", uint64(le.Uint16(img[1024+14:])), 36},
		{"inos", le.Uint64(img[1024+16:]), 257},
		{"build_time", le.Uint64(img[1024+24:]), 1700000000},
		{"blocks", uint64(le.Uint32(img[1024+36:])), 4},
		{"xattr_blkaddr", uint64(le.Uint32(img[1024+44:])), 2},
		// Root inode at 1152, compact.
		{"root i_format", uint64(le.Uint16(img[1152:])), 0},
		{"root i_xattr_icount", uint64(le.Uint16(img[1152+2:])), 6},
		{"root i_mode", uint64(le.Uint16(img[1152+4:])), 0o40755},
		{"root i_nlink", uint64(le.Uint16(img[1152+6:])), 2},
		{"root i_size", uint64(le.Uint32(img[1152+8:])), 4096},
		{"root i_u", uint64(le.Uint32(img[1152+16:])), 3},
		{"root i_ino", uint64(le.Uint32(img[1152+20:])), 0},
		{"root name filter", uint64(le.Uint32(img[1152+32:])), 0xffefffff},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.what, c.got, c.want)
		}
	}
	// The inline xattr entry: 0e 04 01 00 "overlay.opaque" "y" 00.
	entry := img[1152+32+12 : 1152+32+12+20]
	if want := append([]byte{0x0e, 0x04, 0x01, 0x00}, "overlay.opaquey\x00"...); !bytes.Equal(entry, want) {
		t.Errorf("root xattr entry % x, want % x", entry, want)
	}
	// Stubs 00..ff at nids 38..293, compact char devices 020644.
	for i := 0; i < 256; i++ {
		off := (38 + i) * 32
		if m := le.Uint16(img[off+4:]); m != 0o20644 {
			t.Fatalf("stub %02x mode %o, want 020644", i, m)
		}
		if ino := le.Uint32(img[off+20:]); ino != uint32(i+1) {
			t.Fatalf("stub %02x ino %d, want %d", i, ino, i+1)
		}
	}
	wtFsck(t, img)
}

// wtRich builds a tree exercising most rewrite rules.
func wtRich(t testing.TB) *composefs.Node {
	root := wtDir("", 1700000000)
	root.Xattrs = []composefs.Xattr{{Name: "security.selinux", Value: "system_u:object_r:root_t:s0"}}
	sub := wtDir("sub", 1700000001)
	wo := composefs.NewNode("gone", composefs.TypeChar|0o600)
	wo.Mtime = root.Mtime
	ext := wtExternal("ext", strings.Repeat("x", 100), 1700000000)
	if err := ext.SetXattr("trusted.overlay.redirect", "/evil"); err != nil {
		t.Fatal(err)
	}
	if err := ext.SetXattr("user.a", "shared"); err != nil {
		t.Fatal(err)
	}
	ext2 := wtExternal("ext2", strings.Repeat("x", 100), 1700000000)
	if err := ext2.SetXattr("user.a", "shared"); err != nil {
		t.Fatal(err)
	}
	inl := wtFile("inline", "hello", 1700000000)
	big := wtFile("big", strings.Repeat("b", 5000), 1700000000)
	link := composefs.NewNode("sym", composefs.TypeSymlink|0o777)
	link.Payload = "ext"
	link.Size = 3
	link.Mtime = root.Mtime
	dev := composefs.NewNode("dev", composefs.TypeBlock|0o600)
	dev.Rdev = 8<<8 | 1
	dev.Mtime = root.Mtime
	wtAdd(t, sub, wo, ext, inl)
	wtAdd(t, root, sub, ext2, big, link, dev)
	// Named to sort after /sub, so that the reader (which makes the
	// first entry met depth-first the primary) keeps /sub/ext primary.
	hl := &composefs.Node{Name: "zz-hl", Link: ext}
	wtAdd(t, root, hl)
	return root
}

func wtDumpText(t testing.TB, root *composefs.Node) string {
	t.Helper()
	var b strings.Builder
	if err := dump.Write(&b, root); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// wtSnapshot records every node's fields, including slice headers, so that
// any change by the writer is detected.
func wtSnapshot(root *composefs.Node) string {
	var b strings.Builder
	_ = root.Walk(func(path string, n *composefs.Node) error {
		fmt.Fprintf(&b, "%s %+v %v %p %d\n", path, *n, n.Xattrs, n.Children, len(n.Children))
		return nil
	})
	return b.String()
}

func TestWriteDoesNotModifyTree(t *testing.T) {
	root := wtRich(t)
	before, beforeDump := wtSnapshot(root), wtDumpText(t, root)
	img1 := wtWrite(t, root, DefaultWriteOptions())
	if after := wtSnapshot(root); after != before {
		t.Errorf("tree changed by Write:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := wtDumpText(t, root); after != beforeDump {
		t.Errorf("dump changed by Write:\nbefore:\n%s\nafter:\n%s", beforeDump, after)
	}
	img2 := wtWrite(t, root, DefaultWriteOptions())
	if !bytes.Equal(img1, img2) {
		t.Error("writing the same tree twice gives different images")
	}
	wtFsck(t, img1)
}

// TestWriteRoundTrip reads a written image back with the reader and
// checks what the rewrite pass must preserve or add.
func TestWriteRoundTrip(t *testing.T) {
	root := wtRich(t)
	img := wtWrite(t, root, DefaultWriteOptions())
	got, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	// The tree round-trips (whiteouts come back as char 0/0, escaped
	// xattrs unescaped, stubs dropped), except that the directory nlink is
	// recomputed and compact inodes take the minimum mtime.
	// Directory sizes are the dirent bytes; version 1 marks /sub, which
	// holds a whiteout, opaque (spec §5.3).
	want := wtDumpText(t, root)
	want = strings.Replace(want, "/ 0 40755 1 ", "/ 4096 40755 3 ", 1)
	want = strings.Replace(want, "/sub 0 40755 1 0 0 0 1700000001.0 - - -", "/sub 76 40755 2 0 0 0 1700000001.0 - - - trusted.overlay.opaque=x user.overlay.opaque=x", 1)
	if g := wtDumpText(t, got); g != want {
		t.Errorf("round trip:\n got:\n%s\nwant:\n%s", g, want)
	}
	hl := got.Lookup("zz-hl")
	if hl == nil || hl.Link != got.Lookup("sub").Lookup("ext") {
		t.Errorf("hardlink /zz-hl does not point at /sub/ext after the round trip")
	}
}

// TestWriteVersions checks version resolution (spec §4).
func TestWriteVersions(t *testing.T) {
	withWhiteout := wtRich(t)
	plain := wtDir("", 1700000000)
	wtAdd(t, plain, wtFile("f", "x", 1700000000))

	hdrVersion := func(img []byte) uint32 { return binary.LittleEndian.Uint32(img[12:]) }
	for _, tc := range []struct {
		opts       WriteOptions
		whiteout   uint32
		noWhiteout uint32
	}{
		{DefaultWriteOptions(), 1, 0},
		{WriteOptions{}, 0, 0},
		{WriteOptions{MinVersion: 0, MaxVersion: 0}, 0, 0},
		{WriteOptions{MinVersion: 1, MaxVersion: 1}, 1, 1},
		{WriteOptions{MinVersion: 1, MaxVersion: 0}, 1, 1}, // max raised to min
	} {
		if v := hdrVersion(wtWrite(t, withWhiteout, tc.opts)); v != tc.whiteout {
			t.Errorf("%+v with whiteout: version %d, want %d", tc.opts, v, tc.whiteout)
		}
		if v := hdrVersion(wtWrite(t, plain, tc.opts)); v != tc.noWhiteout {
			t.Errorf("%+v without whiteout: version %d, want %d", tc.opts, v, tc.noWhiteout)
		}
	}
	// Without whiteouts the version only changes the header field.
	a, b := wtWrite(t, plain, WriteOptions{}), wtWrite(t, plain, WriteOptions{MinVersion: 1, MaxVersion: 1})
	a[12], b[12] = 0, 0
	if !bytes.Equal(a, b) {
		t.Error("version 0 and 1 images of a tree without whiteouts differ beyond the header")
	}
	// With whiteouts, version 1 adds the opaque "x" markers.
	for _, tc := range []struct {
		opts   WriteOptions
		opaque bool
	}{{WriteOptions{}, false}, {DefaultWriteOptions(), true}} {
		img := wtWrite(t, withWhiteout, tc.opts)
		hasX := bytes.Contains(img, []byte("overlay.overlay.opaquex")) && bytes.Contains(img, []byte("overlay.opaquex"))
		if hasX != tc.opaque {
			t.Errorf("%+v: opaque x markers present %v, want %v", tc.opts, hasX, tc.opaque)
		}
	}
	for _, bad := range []WriteOptions{{MinVersion: 2, MaxVersion: 2}, {MinVersion: 0, MaxVersion: 2}, {MinVersion: -1, MaxVersion: 1}} {
		_, err := Write(io.Discard, plain, bad)
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: error %v, want ErrInvalidOptions", bad, err)
		}
	}
}

func TestWriteInvalidTrees(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func() *composefs.Node
	}{
		{"nil root", func() *composefs.Node { return nil }},
		{"root not a dir", func() *composefs.Node { return wtFile("", "x", 0) }},
		{"hardlink outside the tree", func() *composefs.Node {
			root := wtDir("", 0)
			outside := wtFile("outside", "x", 0)
			root.Children = append(root.Children, &composefs.Node{Name: "hl", Link: outside})
			return root
		}},
		{"hardlink to a directory", func() *composefs.Node {
			root := wtDir("", 0)
			d := wtDir("d", 0)
			root.Children = append(root.Children, d, &composefs.Node{Name: "hl", Link: d})
			return root
		}},
		{"duplicate names", func() *composefs.Node {
			root := wtDir("", 0)
			root.Children = append(root.Children, wtFile("a", "1", 0), wtFile("a", "2", 0))
			return root
		}},
		{"name with slash", func() *composefs.Node {
			root := wtDir("", 0)
			root.Children = append(root.Children, wtFile("a/b", "1", 0))
			return root
		}},
		{"dot name", func() *composefs.Node {
			root := wtDir("", 0)
			root.Children = append(root.Children, wtFile(".", "1", 0))
			return root
		}},
		{"name too long", func() *composefs.Node {
			root := wtDir("", 0)
			root.Children = append(root.Children, wtFile(strings.Repeat("n", 256), "1", 0))
			return root
		}},
		{"xattr value too long", func() *composefs.Node {
			root := wtDir("", 0)
			root.Xattrs = []composefs.Xattr{{Name: "user.big", Value: strings.Repeat("v", 65536)}}
			return root
		}},
		{"xattrs over the inode budget", func() *composefs.Node {
			root := wtDir("", 0)
			root.Xattrs = []composefs.Xattr{{Name: "user.a", Value: strings.Repeat("v", 20000)}, {Name: "user.b", Value: strings.Repeat("v", 20000)}}
			return root
		}},
		{"empty xattr name", func() *composefs.Node {
			root := wtDir("", 0)
			root.Xattrs = []composefs.Xattr{{Name: "", Value: "v"}}
			return root
		}},
		{"inline content size mismatch", func() *composefs.Node {
			root := wtDir("", 0)
			f := wtFile("f", "abc", 0)
			f.Size = 4
			root.Children = append(root.Children, f)
			return root
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := Write(&buf, tc.build(), DefaultWriteOptions())
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Fatalf("error %v, want one matching composefs.ErrInvalid", err)
			}
			var ie *composefs.InvalidError
			if !errors.As(err, &ie) {
				t.Errorf("error %T is not a *composefs.InvalidError", err)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written before the error", buf.Len())
			}
		})
	}
}

// TestWriteUnsortedChildren: children appended without SortChildren are
// written in strcmp order all the same.
func TestWriteUnsortedChildren(t *testing.T) {
	sorted := wtDir("", 5)
	wtAdd(t, sorted, wtFile("b", "2", 5), wtFile("a", "1", 5), wtFile("00", "0", 5), wtFile("-", "3", 5))
	unsorted := wtDir("", 5)
	unsorted.Children = []*composefs.Node{wtFile("b", "2", 5), wtFile("00", "0", 5), wtFile("-", "3", 5), wtFile("a", "1", 5)}
	if !bytes.Equal(wtWrite(t, sorted, DefaultWriteOptions()), wtWrite(t, unsorted, DefaultWriteOptions())) {
		t.Error("unsorted children give a different image")
	}
}

type wtFailWriter struct{ n int }

var errWtFail = errors.New("disk full")

func (w *wtFailWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errWtFail
	}
	w.n--
	return len(p), nil
}

func TestWriteWriterError(t *testing.T) {
	root := wtDir("", 1)
	for i := 0; i < 300; i++ {
		wtAdd(t, root, wtFile(fmt.Sprintf("file-%03d", i), strings.Repeat("c", 3000), 1))
	}
	for _, n := range []int{0, 1, 3} {
		_, err := Write(&wtFailWriter{n: n}, root, DefaultWriteOptions())
		if !errors.Is(err, errWtFail) {
			t.Errorf("after %d writes: error %v, want the writer's error", n, err)
		}
	}
}

// TestWriteManySharedXattrs: only the first 128 shared xattrs of an inode
// are referenced; the rest are stored inline (spec §7.3).
func TestWriteManySharedXattrs(t *testing.T) {
	root := wtDir("", 1)
	var files []*composefs.Node
	for i := 0; i < 2; i++ {
		f := wtFile(fmt.Sprintf("f%d", i), "", 1)
		for j := 0; j < 130; j++ {
			if err := f.SetXattr(fmt.Sprintf("user.x%03d", j), "v"); err != nil {
				t.Fatal(err)
			}
		}
		files = append(files, f)
	}
	wtAdd(t, root, files...)
	b, err := wrPlan(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(b.shared) != 130 {
		t.Fatalf("%d shared xattrs, want 130", len(b.shared))
	}
	for i := range b.inodes {
		ino := &b.inodes[i]
		if ino.node == nil || !ino.node.IsRegular() {
			continue
		}
		nShared, xsize := b.inodeXattrs(ino)
		if nShared != 128 {
			t.Errorf("%s: %d shared refs, want 128", ino.node.Name, nShared)
		}
		// 12-byte header, 128 ids, 2 inline entries of 4+4+1 → 12 bytes.
		if want := uint32(12 + 128*4 + 2*12); xsize != want {
			t.Errorf("%s: xattr size %d, want %d", ino.node.Name, xsize, want)
		}
	}
	img := wtWrite(t, root, DefaultWriteOptions())
	got, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got.Children {
		if len(f.Xattrs) != 130 {
			t.Errorf("%s: %d xattrs read back, want 130", f.Name, len(f.Xattrs))
		}
	}
	wtFsck(t, img)
}

// TestWriteSharedOrder checks the shared table order (name descending,
// then value length, then value bytes, spec §7.3) and the ids.
func TestWriteSharedOrder(t *testing.T) {
	root := wtDir("", 1)
	pairs := []composefs.Xattr{{Name: "user.b", Value: "1"}, {Name: "user.a", Value: "22"}, {Name: "user.c", Value: "1"}}
	for i := 0; i < 2; i++ {
		f := wtFile(fmt.Sprintf("f%d", i), "", 1)
		f.Xattrs = append([]composefs.Xattr(nil), pairs...)
		wtAdd(t, root, f)
	}
	g1, g2 := wtFile("g1", "", 1), wtFile("g2", "", 1)
	g1.Xattrs = []composefs.Xattr{{Name: "user.a", Value: "3"}}
	g2.Xattrs = []composefs.Xattr{{Name: "user.a", Value: "3"}}
	h1, h2 := wtFile("h1", "", 1), wtFile("h2", "", 1)
	h1.Xattrs = []composefs.Xattr{{Name: "user.a", Value: "21"}}
	h2.Xattrs = []composefs.Xattr{{Name: "user.a", Value: "21"}}
	wtAdd(t, root, g1, g2, h1, h2)
	b, err := wrPlan(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, id := range b.shared {
		x := &b.xattrs[id]
		order = append(order, x.name()+"="+x.value())
	}
	want := []string{"user.c=1", "user.b=1", "user.a=22", "user.a=21", "user.a=3"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("shared order %q, want %q", order, want)
	}
	img := wtWrite(t, root, DefaultWriteOptions())
	got, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := got.Lookup("h2").GetXattr("user.a"); v != "21" {
		t.Errorf("h2 user.a = %q after round trip, want 21", v)
	}
	wtFsck(t, img)
}

// TestWriteLayoutRules checks tail packing decisions on hand-built trees
// (spec §8, §9) through the computed plan.
func TestWriteLayoutRules(t *testing.T) {
	root := wtDir("", 1)
	long := composefs.NewNode("long", composefs.TypeSymlink|0o777)
	long.Payload = strings.Repeat("t", 4095)
	long.Size = 4095
	long.Mtime = composefs.Timespec{Sec: 1}
	short := composefs.NewNode("short", composefs.TypeSymlink|0o777)
	short.Payload = "target"
	short.Size = 6
	short.Mtime = composefs.Timespec{Sec: 1}
	wtAdd(t, root,
		wtFile("f3000", strings.Repeat("a", 3000), 1),
		wtFile("f5000", strings.Repeat("a", 5000), 1),
		wtFile("f2048", strings.Repeat("a", 2048), 1),
		long, short)
	huge := composefs.NewNode("huge", composefs.TypeRegular|0o644)
	huge.Size = 9_000_000_000_000_000
	huge.Payload = "ab/cd"
	huge.Mtime = composefs.Timespec{Sec: 1}
	late := wtFile("late", "x", 2)
	wtAdd(t, root, huge, late)
	b, err := wrPlan(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][3]uint64{}
	for i := range b.inodes {
		ino := &b.inodes[i]
		if ino.node != nil && ino.node.Name != "" {
			c := uint64(0)
			if ino.compact {
				c = 1
			}
			got[ino.node.Name] = [3]uint64{uint64(ino.nBlocks), uint64(ino.tail), c}
		}
	}
	want := map[string][3]uint64{
		"f3000": {1, 0, 1},    // tail 3000 > 2048: a full block
		"f5000": {1, 904, 1},  // one block and a 904-byte tail
		"f2048": {0, 2048, 1}, // exactly half a block is inlined
		"long":  {1, 0, 1},    // inode+target ≥ 4096: out of line
		"short": {0, 6, 1},
		"huge":  {1, 0, 0}, // 1024-entry chunk map cannot be inlined; size > 2^32: extended
		"late":  {0, 1, 0}, // mtime after the minimum: extended
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layout (blocks, tail, compact):\n got %v\nwant %v", got, want)
	}
	img := wtWrite(t, root, DefaultWriteOptions())
	back, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"f3000", "f5000", "f2048"} {
		if !bytes.Equal(back.Lookup(name).Content, root.Lookup(name).Content) {
			t.Errorf("%s: content differs after the round trip", name)
		}
	}
	if back.Lookup("long").Payload != long.Payload {
		t.Error("long symlink target differs after the round trip")
	}
	wtFsck(t, img)
}
