package composefs

import (
	"bytes"
	"slices"
)

// ChangeKind says how a path differs between two trees.
type ChangeKind byte

// Change kinds, as printed by `cfs-commit diff`.
const (
	Added    ChangeKind = 'A'
	Removed  ChangeKind = 'D'
	Modified ChangeKind = 'M'
)

// Change is one differing path.
type Change struct {
	Kind ChangeKind `json:"-"`
	Path string     `json:"path"`
}

// Diff lists the paths added, removed or modified from tree a to tree b,
// depth-first in name order. A path is modified when its type, content
// (digest, inline content, symlink target or hardlink target), size, mode,
// owner, rdev, mtime or xattrs differ. Children of added and removed
// directories are listed too.
func Diff(a, b *Node) []Change {
	var out []Change
	diffNode("/", a, b, &out)
	return out
}

func diffNode(path string, a, b *Node, out *[]Change) {
	if !sameNode(a, b) {
		*out = append(*out, Change{Kind: Modified, Path: path})
	}
	if !a.IsDir() || !b.IsDir() {
		if a.IsDir() {
			listAll(path, a, Removed, out)
		}
		if b.IsDir() {
			listAll(path, b, Added, out)
		}
		return
	}
	i, j := 0, 0
	for i < len(a.Children) || j < len(b.Children) {
		switch {
		case j == len(b.Children) || i < len(a.Children) && a.Children[i].Name < b.Children[j].Name:
			c := a.Children[i]
			*out = append(*out, Change{Kind: Removed, Path: join(path, c.Name)})
			listAll(join(path, c.Name), c, Removed, out)
			i++
		case i == len(a.Children) || b.Children[j].Name < a.Children[i].Name:
			c := b.Children[j]
			*out = append(*out, Change{Kind: Added, Path: join(path, c.Name)})
			listAll(join(path, c.Name), c, Added, out)
			j++
		default:
			diffNode(join(path, a.Children[i].Name), a.Children[i], b.Children[j], out)
			i++
			j++
		}
	}
}

func listAll(path string, n *Node, kind ChangeKind, out *[]Change) {
	if !n.IsDir() {
		return
	}
	for _, c := range n.Children {
		p := join(path, c.Name)
		*out = append(*out, Change{Kind: kind, Path: p})
		listAll(p, c, kind, out)
	}
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func sameNode(a, b *Node) bool {
	if (a.Link != nil) != (b.Link != nil) {
		return false
	}
	if a.Link != nil {
		return a.Link.Path() == b.Link.Path()
	}
	if a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID || a.Mtime != b.Mtime {
		return false
	}
	if a.Type() != TypeDir && (a.Size != b.Size || a.Payload != b.Payload || !bytes.Equal(a.Content, b.Content)) {
		return false
	}
	if (a.Type() == TypeChar || a.Type() == TypeBlock) && a.Rdev != b.Rdev {
		return false
	}
	if (a.Digest == nil) != (b.Digest == nil) || a.Digest != nil && *a.Digest != *b.Digest {
		return false
	}
	return slices.Equal(sortedXattrs(a), sortedXattrs(b))
}

func sortedXattrs(n *Node) []Xattr {
	x := slices.Clone(n.Xattrs)
	slices.SortFunc(x, func(p, q Xattr) int {
		switch {
		case p.Name < q.Name:
			return -1
		case p.Name > q.Name:
			return 1
		}
		return 0
	})
	return x
}
