package dump

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
)

func add(t *testing.T, parent, child *composefs.Node) *composefs.Node {
	t.Helper()
	if err := parent.AddChild(child); err != nil {
		t.Fatal(err)
	}
	return child
}

// testTree builds a tree with every kind of entry Write must print.
func testTree(t *testing.T) *composefs.Node {
	t.Helper()
	root := composefs.NewNode("", composefs.TypeDir|0o755)
	root.Nlink, root.Size, root.Mtime = 3, 4096, composefs.Timespec{Sec: 1700000000}
	d, err := fsverity.ParseDigest("8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f")
	if err != nil {
		t.Fatal(err)
	}
	tgt := add(t, root, composefs.NewNode("t arget", composefs.TypeRegular|0o644))
	tgt.Size, tgt.Nlink, tgt.UID, tgt.GID, tgt.Digest = 300, 2, 1000, 100, &d
	tgt.Payload = d.ObjectPath()
	tgt.Mtime = composefs.Timespec{Sec: -1, Nsec: 999999999}
	if err := tgt.SetXattr("user.a=b", "x=y z\x00"); err != nil {
		t.Fatal(err)
	}
	sub := add(t, root, composefs.NewNode("sub", composefs.TypeDir|0o700))
	hl := add(t, sub, composefs.NewNode("hl", composefs.TypeRegular|0o600))
	hl.Link = tgt
	hl.UID = 7 // ignored: a hardlink prints its target
	dash := add(t, root, composefs.NewNode("-", composefs.TypeRegular|0o644))
	dash.Size, dash.Content = 1, []byte("-")
	ext := add(t, root, composefs.NewNode("ext", composefs.TypeRegular|0o644))
	ext.Size, ext.Payload = 10, "-"
	empty := add(t, root, composefs.NewNode("empty", composefs.TypeRegular|0o644))
	empty.Content = []byte{} // same as nil for a 0-byte file
	sym := add(t, root, composefs.NewNode("sym", composefs.TypeSymlink|0o777))
	sym.Payload, sym.Size = "-", 1
	wh := add(t, root, composefs.NewNode("wh", composefs.TypeChar))
	wh.Rdev = 0
	blk := add(t, root, composefs.NewNode("blk", composefs.TypeBlock|0o600))
	blk.Rdev = 1<<32 | 5
	return root
}

func TestWrite(t *testing.T) {
	root := testTree(t)
	var b bytes.Buffer
	if err := Write(&b, root); err != nil {
		t.Fatal(err)
	}
	want := `/ 4096 40755 3 0 0 0 1700000000.0 - - -
/- 1 100644 1 0 0 0 0.0 - \x2d -
/blk 0 60600 1 0 0 5 0.0 - - -
/empty 0 100644 1 0 0 0 0.0 - - -
/ext 10 100644 1 0 0 0 0.0 \x2d - -
/sub 0 40700 1 0 0 0 0.0 - - -
/sub/hl 300 @100644 2 1000 100 0 -1.999999999 /t\x20arget - 8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f user.a\x3db=x\x3dy\x20z\x00
/sym 1 120777 1 0 0 0 0.0 \x2d - -
/t\x20arget 300 100644 2 1000 100 0 -1.999999999 8b/5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f - 8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f user.a\x3db=x\x3dy\x20z\x00
/wh 0 20000 1 0 0 0 0.0 - - -
`
	if b.String() != want {
		t.Errorf("Write:\n%s\nwant:\n%s\n%s", b.String(), want, firstDiff(b.String(), want))
	}

	// What Write prints, Parse reads back to the same tree (bar the
	// 64-bit rdev, printed in 32 bits as upstream does).
	back, err := Parse(bytes.NewReader(b.Bytes()), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := lookup(t, back, "/sub/hl"); n.Link != lookup(t, back, "/t arget") {
		t.Errorf("/sub/hl does not link to /t arget after the round trip")
	}
	if n := lookup(t, back, "/-"); string(n.Content) != "-" {
		t.Errorf("/- content %q", n.Content)
	}
	if n := lookup(t, back, "/ext"); n.Payload != "-" || n.Content != nil {
		t.Errorf("/ext = %+v", n)
	}
	var b2 bytes.Buffer
	if err := Write(&b2, back); err != nil {
		t.Fatal(err)
	}
	if b2.String() != want {
		t.Errorf("Write(Parse(Write)) differs: %s", firstDiff(b2.String(), want))
	}
}

func TestWriteLs(t *testing.T) {
	root := testTree(t)
	var b bytes.Buffer
	if err := WriteLs(&b, root); err != nil {
		t.Fatal(err)
	}
	want := "/-\n/blk\n/empty\n/ext\t@ -\n/sub/\t\n/sub/hl\n/sym\t-> -\n" +
		"/t arget\t@ 8b/5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f\n/wh\n"
	if b.String() != want {
		t.Errorf("WriteLs:\n%q\nwant:\n%q", b.String(), want)
	}
}

func TestObjects(t *testing.T) {
	root := mustParse(t, rootLine+
		"/a 10 100644 1 0 0 0 0.0 zz/obj - -\n"+
		"/b 10 100644 1 0 0 0 0.0 aa/obj - -\n"+
		"/dup 10 100644 1 0 0 0 0.0 zz/obj - -\n"+
		"/hl 10 @100644 1 0 0 0 0.0 /a - -\n"+
		"/inline 2 100644 1 0 0 0 0.0 inline/obj ab -\n"+
		"/zero 0 100644 1 0 0 0 0.0 zero/obj - -\n"+
		"/space 10 100644 1 0 0 0 0.0 with\\x20space - -\n"+
		"/sym 3 120777 1 0 0 0 0.0 sym - -\n"+
		"/dev 0 20644 1 0 0 1 0.0 dev/obj - -\n")
	want := []string{"aa/obj", "with space", "zz/obj"}
	if got := Objects(root); !slices.Equal(got, want) {
		t.Errorf("Objects = %q, want %q", got, want)
	}
	var b bytes.Buffer
	if err := WriteObjects(&b, root); err != nil {
		t.Fatal(err)
	}
	if b.String() != "aa/obj\nwith space\nzz/obj\n" {
		t.Errorf("WriteObjects = %q", b.String())
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, os.ErrClosed
	}
	return len(p), nil
}

func TestWriteErrors(t *testing.T) {
	root := mustParse(t, rootLine+"/big 0 100644 1 0 0 0 0.0 - - - user.a="+strings.Repeat("v", 30000)+"\n")
	for name, fn := range map[string]func(*failWriter) error{
		"Write":   func(w *failWriter) error { return Write(w, root) },
		"WriteLs": func(w *failWriter) error { return WriteLs(w, root) },
		"WriteObjects": func(w *failWriter) error {
			return WriteObjects(w, mustParse(t, rootLine+"/a 1 100644 1 0 0 0 0.0 a/b - -\n"))
		},
	} {
		if err := fn(&failWriter{n: 3}); err == nil {
			t.Errorf("%s: no error from a failing writer", name)
		}
	}
}

// TestDumpfeaturesInput compares the tree parsed from the golden
// dumpfeatures input.dump with the one parsed from image.dump
// (composefs-info dump of the image mkcomposefs built from input.dump).
// They differ only where the image loses or rewrites information:
//   - directory sizes and nlinks are recomputed by the writer;
//   - which path of a hardlink group is the primary: the image reader
//     makes the first one met depth-first the primary;
//   - xattrs are printed sorted (the image stores them sorted);
//   - a directory holding a whiteout gets trusted.overlay.opaque=x and
//     user.overlay.opaque=x (format version 1);
//   - RDEV is stored in 32 bits;
//   - xattrs of hardlink lines are ignored, the target's count.
func TestDumpfeaturesInput(t *testing.T) {
	dir := filepath.Join(testutil.GoldenDir(t), "dumpfeatures")
	in := parseFile(t, filepath.Join(dir, "input.dump"))
	img := parseFile(t, filepath.Join(dir, "image.dump"))
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}

	// Printing is canonical: input.dump is not (unsorted, escapes
	// content), so Write reorders it, but parsing the result gives the
	// same printout again.
	var w1, w2 bytes.Buffer
	if err := Write(&w1, in); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "input.dump"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w1.Bytes(), raw) {
		t.Error("Write(input.dump) is input.dump: the test input lost its non-canonical parts")
	}
	if err := Write(&w2, mustParse(t, w1.String())); err != nil {
		t.Fatal(err)
	}
	if w1.String() != w2.String() {
		t.Errorf("Write is not stable: %s", firstDiff(w2.String(), w1.String()))
	}

	type entry struct {
		node  *composefs.Node
		group string // sorted paths sharing the inode
	}
	collect := func(root *composefs.Node) map[string]entry {
		groups := map[*composefs.Node][]string{}
		paths := map[string]*composefs.Node{}
		_ = root.Walk(func(p string, n *composefs.Node) error {
			paths[p] = n
			groups[n.Target()] = append(groups[n.Target()], p)
			return nil
		})
		out := map[string]entry{}
		for p, n := range paths {
			g := slices.Clone(groups[n.Target()])
			slices.Sort(g)
			out[p] = entry{n.Target(), strings.Join(g, ",")}
		}
		return out
	}
	a, b := collect(in), collect(img)
	if len(a) != len(b) {
		t.Fatalf("input has %d entries, image %d", len(a), len(b))
	}
	hasWhiteout := func(n *composefs.Node) bool {
		for _, c := range n.Children {
			if c.Link == nil && c.IsWhiteout() {
				return true
			}
		}
		return false
	}
	sortedXattrs := func(xs []composefs.Xattr) []composefs.Xattr {
		xs = slices.Clone(xs)
		slices.SortFunc(xs, func(x, y composefs.Xattr) int { return strings.Compare(x.Name, y.Name) })
		return xs
	}
	for p, ea := range a {
		eb, ok := b[p]
		if !ok {
			t.Errorf("%s missing from image.dump", p)
			continue
		}
		if ea.group != eb.group {
			t.Errorf("%s: hardlink group %s, image has %s", p, ea.group, eb.group)
		}
		x, y := *ea.node, *eb.node
		if x.IsDir() {
			x.Size, y.Size, x.Nlink, y.Nlink = 0, 0, 0, 0
		}
		x.Rdev = uint64(uint32(x.Rdev))
		if x.Mode != y.Mode || x.Nlink != y.Nlink || x.UID != y.UID || x.GID != y.GID || x.Rdev != y.Rdev ||
			x.Size != y.Size || x.Mtime != y.Mtime || x.Payload != y.Payload || !bytes.Equal(x.Content, y.Content) ||
			(x.Digest == nil) != (y.Digest == nil) || (x.Digest != nil && *x.Digest != *y.Digest) {
			t.Errorf("%s:\n input %+v\n image %+v", p, x, y)
		}
		wantX := sortedXattrs(x.Xattrs)
		if hasWhiteout(ea.node) {
			n := composefs.Node{Xattrs: wantX}
			_ = n.SetXattr("trusted.overlay.opaque", "x")
			_ = n.SetXattr("user.overlay.opaque", "x")
			wantX = sortedXattrs(n.Xattrs)
		}
		if !equalXattrs(wantX, sortedXattrs(y.Xattrs)) {
			t.Errorf("%s: xattrs %q, image has %q", p, wantX, y.Xattrs)
		}
	}
}

// TestWriteEscapingGrowsXattrs documents a limit shared with upstream: raw
// bytes ≥ 0x80 take one byte each in the input but four once printed, so
// a dump Parse accepts can print xattr text longer than the 65535 bytes
// upstream (and Parse) accept on one line.
func TestWriteEscapingGrowsXattrs(t *testing.T) {
	in := rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("\x80", 16400) + "\n"
	root := mustParse(t, in)
	var b bytes.Buffer
	if err := Write(&b, root); err != nil {
		t.Fatal(err)
	}
	_, err := Parse(&b, ParseOptions{})
	if err == nil || !strings.Contains(err.Error(), "too many xattrs: 65607 bytes") {
		t.Errorf("Parse(Write(tree)) = %v, want the too-many-xattrs error", err)
	}
}
