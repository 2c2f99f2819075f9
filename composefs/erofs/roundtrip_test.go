package erofs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// rtTrees is the number of random trees the round-trip property checks.
const rtTrees = 300

// TestRoundTripProperty checks, over random trees covering every file
// type, hardlinks, whiteouts, overlay xattrs, odd names and the extended
// inode fields:
//
//  1. write → read → dump → parse → write gives identical image bytes;
//  2. the tree read back equals the generated tree after the documented
//     transformations of spec §5/§6/§12 (so a field the writer drops or
//     the reader invents cannot hide behind a consistent round trip).
func TestRoundTripProperty(t *testing.T) {
	for seed := range uint64(rtTrees) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		tree := rtGenTree(r)
		if err := tree.Validate(); err != nil {
			t.Fatalf("seed %d: generator made an invalid tree: %v", seed, err)
		}
		if err := rtCheck(tree); err != nil {
			var d bytes.Buffer
			_ = dump.Write(&d, tree)
			t.Fatalf("seed %d: %v\ngenerated tree:\n%.4000s", seed, err, d.String())
		}
	}
}

func rtCheck(tree *composefs.Node) error {
	var img1 bytes.Buffer
	d1, err := Write(&img1, tree, DefaultWriteOptions())
	if err != nil {
		return fmt.Errorf("first write: %w", err)
	}
	if want := fsverity.DigestBytes(img1.Bytes()); want != d1 {
		return fmt.Errorf("Write returned digest %v, image digest is %v", d1, want)
	}
	back, err := Read(bytes.NewReader(img1.Bytes()), int64(img1.Len()))
	if err != nil {
		return fmt.Errorf("reading the written image: %w", err)
	}
	got, want := rtDescribe(back), rtDescribe(rtExpected(tree))
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Errorf("tree read back differs from the expected tree at entry %d:\n got: %.600s\nwant: %.600s", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("tree read back has %d entries, want %d", len(got), len(want))
	}

	var text bytes.Buffer
	if err := dump.Write(&text, back); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	parsed, err := dump.Parse(bytes.NewReader(text.Bytes()), dump.ParseOptions{Strict: true})
	if err != nil {
		return fmt.Errorf("parsing the dump: %w\n%s", err, text.String())
	}
	var img2 bytes.Buffer
	if _, err := Write(&img2, parsed, DefaultWriteOptions()); err != nil {
		return fmt.Errorf("second write: %w", err)
	}
	if !bytes.Equal(img1.Bytes(), img2.Bytes()) {
		at := 0
		for at < min(img1.Len(), img2.Len()) && img1.Bytes()[at] == img2.Bytes()[at] {
			at++
		}
		return fmt.Errorf("write → read → dump → parse → write: images differ (%d vs %d bytes, first difference at byte %d)", img1.Len(), img2.Len(), at)
	}
	return nil
}

// rtExpected returns what reading an image of tree must give: a deep
// copy with the transformations the format implies.
func rtExpected(tree *composefs.Node) *composefs.Node {
	copies := map[*composefs.Node]*composefs.Node{}
	var clone func(n *composefs.Node) *composefs.Node
	clone = func(n *composefs.Node) *composefs.Node {
		c := &composefs.Node{
			Name: n.Name, Mode: n.Mode, Nlink: n.Nlink, UID: n.UID, GID: n.GID, Rdev: n.Rdev, Size: n.Size,
			Mtime: n.Mtime, Payload: n.Payload, Content: n.Content, Digest: n.Digest, Xattrs: slices.Clone(n.Xattrs),
			Link: n.Link,
		}
		copies[n] = c
		for _, ch := range n.Children {
			c.Children = append(c.Children, clone(ch))
		}
		return c
	}
	root := clone(tree)
	hasWhiteout := false
	_ = tree.Walk(func(_ string, n *composefs.Node) error {
		if n.Link == nil && n.IsWhiteout() {
			hasWhiteout = true
		}
		return nil
	})
	var fix func(n *composefs.Node)
	fix = func(n *composefs.Node) {
		if n.Link != nil {
			n.Link = copies[n.Link]
			n.Mode = n.Link.Mode
			return
		}
		switch n.Type() {
		case composefs.TypeDir:
			n.Size, n.Nlink = 0, 0 // computed by the writer; not compared
			if hasWhiteout && slices.ContainsFunc(n.Children, func(c *composefs.Node) bool { return c.Link == nil && c.IsWhiteout() }) {
				// Version 1: a directory with a whiteout is opaque "x".
				rtSetXattr(n, XattrOpaque, "x")
				rtSetXattr(n, XattrUserOverlayOpaque, "x")
			}
		case composefs.TypeRegular:
			if n.Size == 0 || n.Content != nil {
				// Empty and inline files carry no payload or digest.
				n.Payload, n.Digest = "", nil
			}
			if n.Size == 0 {
				n.Content = nil
			}
		case composefs.TypeSymlink:
		case composefs.TypeChar, composefs.TypeBlock:
			n.Size = 0
			n.Rdev = uint64(uint32(n.Rdev))
		default:
			n.Size = 0
		}
		if n.Type() != composefs.TypeRegular && n.Type() != composefs.TypeSymlink {
			n.Payload, n.Content, n.Digest = "", nil, nil
		}
		for _, c := range n.Children {
			fix(c)
		}
	}
	fix(root)
	return root
}

func rtSetXattr(n *composefs.Node, name, value string) {
	for i := range n.Xattrs {
		if n.Xattrs[i].Name == name {
			n.Xattrs[i].Value = value
			return
		}
	}
	n.Xattrs = append(n.Xattrs, composefs.Xattr{Name: name, Value: value})
}

// rtDescribe renders a tree for comparison: directories' size and nlink
// are left out (the writer computes them) and xattrs are sorted (the
// image stores them sorted). It does not rely on parent pointers.
func rtDescribe(root *composefs.Node) []string {
	paths := map[*composefs.Node]string{}
	var order []*composefs.Node
	var collect func(path string, n *composefs.Node)
	collect = func(path string, n *composefs.Node) {
		paths[n] = path
		order = append(order, n)
		prefix := path
		if prefix != "/" {
			prefix += "/"
		}
		for _, c := range n.Children {
			collect(prefix+c.Name, c)
		}
	}
	collect("/", root)
	var out []string
	for _, n := range order {
		path := paths[n]
		if n.Link != nil {
			out = append(out, fmt.Sprintf("%q mode=%o hardlink -> %q", path, n.Mode, paths[n.Link]))
			continue
		}
		xs := slices.Clone(n.Xattrs)
		slices.SortFunc(xs, func(a, b composefs.Xattr) int { return strings.Compare(a.Name, b.Name) })
		d := "-"
		if n.Digest != nil {
			d = n.Digest.String()
		}
		size, nlink := fmt.Sprint(n.Size), fmt.Sprint(n.Nlink)
		if n.Type() == composefs.TypeDir {
			size, nlink = "*", "*"
		}
		out = append(out, fmt.Sprintf("%q size=%s mode=%o nlink=%s uid=%d gid=%d rdev=%d mtime=%d.%d payload=%q content=%q digest=%s xattrs=%q",
			path, size, n.Mode, nlink, n.UID, n.GID, n.Rdev, n.Mtime.Sec, n.Mtime.Nsec, n.Payload, n.Content, d, xs))
	}
	return out
}

// rtGen holds the state of one random tree.
type rtGen struct {
	r        *rand.Rand
	nodes    int
	xvalues  []string // shared values, to make shared xattrs
	digests  []fsverity.Digest
	payloads []string
}

// rtGenTree makes a random valid tree.
func rtGenTree(r *rand.Rand) *composefs.Node {
	g := &rtGen{r: r}
	for range 4 {
		g.xvalues = append(g.xvalues, g.bytes(0, 20))
		var d fsverity.Digest
		for i := range d {
			d[i] = byte(r.Uint32())
		}
		g.digests = append(g.digests, d)
		g.payloads = append(g.payloads, d.ObjectPath())
	}
	g.payloads = append(g.payloads, "custom/path with space", "/leading-slash", "x")
	root := composefs.NewNode("", composefs.TypeDir|g.perm())
	g.fill(root)
	g.xattrs(root)
	budget := 1 + r.IntN(40)
	dirs := []*composefs.Node{root}
	for range budget {
		parent := dirs[r.IntN(len(dirs))]
		n := g.node(parent == root)
		if err := parent.AddChild(n); err != nil {
			continue // duplicate name
		}
		if n.IsDir() {
			dirs = append(dirs, n)
		}
	}
	g.hardlinks(root, dirs)
	return root
}

func (g *rtGen) perm() uint32 { return uint32(g.r.IntN(0o10000)) }

// bytes returns a random string of n in [lo, hi] bytes, any byte but NUL.
func (g *rtGen) bytes(lo, hi int) string {
	n := lo + g.r.IntN(hi-lo+1)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(1 + g.r.IntN(255))
	}
	return string(b)
}

func (g *rtGen) name(inRoot bool) string {
	switch k := g.r.IntN(20); {
	case k == 0 && inRoot:
		return fmt.Sprintf("%02x", g.r.IntN(256)) // suppresses a root stub
	case k == 1:
		return string([]byte{byte(0x20 + g.r.IntN(14))}) + "x" // sorts before "."
	case k == 2:
		return strings.Repeat("n", 255)
	case k == 3:
		return ".-" + g.bytes(0, 3) // between "." and ".."
	}
	for {
		b := []byte(g.bytes(1, 12))
		for i := range b {
			if b[i] == '/' {
				b[i] = '_'
			}
		}
		if s := string(b); s != "." && s != ".." {
			return s
		}
	}
}

// fill sets the inode fields shared by every type.
func (g *rtGen) fill(n *composefs.Node) {
	r := g.r
	n.Nlink = 1
	if r.IntN(4) == 0 {
		n.Nlink = uint32(r.IntN(100000))
	}
	if r.IntN(4) == 0 {
		n.UID, n.GID = r.Uint32(), r.Uint32()
	} else {
		n.UID, n.GID = uint32(r.IntN(3))*1000, uint32(r.IntN(3))*100
	}
	switch r.IntN(6) {
	case 0:
		n.Mtime = composefs.Timespec{Sec: 1700000000 + int64(r.IntN(100000)), Nsec: uint32(r.IntN(1000000000))}
	case 1:
		n.Mtime = composefs.Timespec{Sec: int64(r.Uint64() >> 1), Nsec: uint32(r.IntN(1000000000))}
	case 2:
		n.Mtime = composefs.Timespec{Sec: -int64(r.IntN(1 << 30))}
	default:
		n.Mtime = composefs.Timespec{Sec: 1700000000}
	}
}

func (g *rtGen) xattrs(n *composefs.Node) {
	r := g.r
	names := []string{
		"user.a", "user.b", "user.overlay.opaque", "trusted.overlay.custom",
		"trusted.overlay.overlay.nested", "trusted.overlay.redirect", "trusted.overlay.metacopy",
		"trusted.overlay.opaque", "trusted.foo", "security.selinux", "security.capability",
		XattrPosixACLAccess, XattrPosixACLDefault, "lustre.foo", "os2.bar", "system.foo",
		"user.with=equals", "user.\x01\xff\n ",
	}
	count := r.IntN(4)
	if r.IntN(30) == 0 {
		count = 140 // more shared candidates than one inode may reference
	}
	for i := range count {
		var name string
		switch {
		case count > 20:
			name = fmt.Sprintf("user.many%03d", i)
		case r.IntN(3) == 0:
			name = "user." + g.bytes(1, 30)
		default:
			name = names[r.IntN(len(names))]
		}
		var value string
		if r.IntN(2) == 0 {
			value = g.xvalues[r.IntN(len(g.xvalues))]
		} else {
			value = g.bytes(0, 40)
		}
		if r.IntN(50) == 0 {
			value = g.bytes(1000, 3000)
		}
		// Keep the line parseable: upstream's dump parser (and ours)
		// refuses more than 65535 bytes of escaped xattr text, and a
		// byte escapes to at most 4.
		text := 0
		for _, x := range n.Xattrs {
			text += 4*(len(x.Name)+len(x.Value)) + 2
		}
		if text+4*(len(name)+len(value))+2 > 65535 {
			continue
		}
		_ = n.SetXattr(name, value) // over the image budget: skipped
	}
}

func (g *rtGen) node(inRoot bool) *composefs.Node {
	r := g.r
	n := &composefs.Node{Name: g.name(inRoot)}
	g.fill(n)
	switch k := r.IntN(100); {
	case k < 15:
		n.Mode = composefs.TypeDir | g.perm()
	case k < 35: // inline
		n.Mode = composefs.TypeRegular | g.perm()
		size := 1 + r.IntN(64)
		if r.IntN(10) == 0 {
			size = 1 + r.IntN(composefs.MaxInlineContent)
		}
		n.Content = []byte(g.bytes(size, size))
		n.Size = uint64(size)
	case k < 55: // external
		n.Mode = composefs.TypeRegular | g.perm()
		n.Size = 65 + uint64(r.IntN(1<<20))
		if r.IntN(10) == 0 {
			n.Size = r.Uint64() >> 12
		}
		if r.IntN(5) != 0 {
			d := g.digests[r.IntN(len(g.digests))]
			n.Digest = &d
		}
		if r.IntN(5) != 0 {
			n.Payload = g.payloads[r.IntN(len(g.payloads))]
		}
	case k < 60:
		n.Mode = composefs.TypeRegular | g.perm()
	case k < 72:
		n.Mode = composefs.TypeSymlink | 0o777
		n.Payload = g.bytes(1, 60)
		if r.IntN(10) == 0 {
			n.Payload = g.bytes(1, composefs.MaxSymlinkLen)
		}
		n.Size = uint64(len(n.Payload))
	case k < 77:
		n.Mode = composefs.TypeChar | g.perm()
		n.Rdev = 1 + r.Uint64()>>uint(r.IntN(64))
	case k < 82:
		n.Mode = composefs.TypeBlock | g.perm()
		n.Rdev = r.Uint64() >> uint(r.IntN(64))
	case k < 87:
		n.Mode = composefs.TypeFifo | g.perm()
	case k < 92:
		n.Mode = composefs.TypeSocket | g.perm()
	default: // an overlay whiteout
		n.Mode = composefs.TypeChar | g.perm()
	}
	g.xattrs(n)
	return n
}

// hardlinks adds hardlink entries whose target comes first in depth-first
// order (the reader makes the first entry met the primary, spec §12).
func (g *rtGen) hardlinks(root *composefs.Node, dirs []*composefs.Node) {
	r := g.r
	for range r.IntN(5) {
		var targets []*composefs.Node
		_ = root.Walk(func(_ string, n *composefs.Node) error {
			if n.Link == nil && !n.IsDir() {
				targets = append(targets, n)
			}
			return nil
		})
		if len(targets) == 0 {
			return
		}
		target := targets[r.IntN(len(targets))]
		dir := dirs[r.IntN(len(dirs))]
		link := &composefs.Node{Name: g.name(dir == root), Mode: target.Mode, Link: target}
		if dir.AddChild(link) != nil {
			continue
		}
		order := map[*composefs.Node]int{}
		_ = root.Walk(func(_ string, n *composefs.Node) error {
			order[n] = len(order)
			return nil
		})
		if order[link] < order[target] {
			dir.RemoveChild(link.Name)
		}
	}
}
