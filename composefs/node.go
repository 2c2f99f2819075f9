// Package composefs is the logical model of a composefs image: a tree of
// nodes (directories, regular files, symlinks, devices, fifos, sockets and
// hardlinks) with the metadata the EROFS writer serialises. Subpackages
// build trees from directories (BuildFromDir), from dump files (dump),
// write and read EROFS images (erofs), compute fs-verity digests (fsverity),
// fill object stores (objstore) and mount images (mount).
package composefs

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// File type bits of Node.Mode (the Linux st_mode values, fixed on every
// architecture composefs supports).
const (
	ModeTypeMask uint32 = 0o170000
	TypeSocket   uint32 = 0o140000
	TypeSymlink  uint32 = 0o120000
	TypeRegular  uint32 = 0o100000
	TypeBlock    uint32 = 0o060000
	TypeDir      uint32 = 0o040000
	TypeChar     uint32 = 0o020000
	TypeFifo     uint32 = 0o010000
	ModePermMask uint32 = 0o7777
)

// Limits enforced on input, as libcomposefs does.
const (
	MaxNameLen       = 255     // bytes in one entry name
	MaxSymlinkLen    = 4095    // bytes in a symlink target (PATH_MAX-1)
	MaxXattrNameLen  = 255     // bytes in an xattr name
	MaxXattrValueLen = 65535   // bytes in an xattr value
	MaxXattrBudget   = 32767   // Σ(7+len(name)+len(value)) + 12 per inode
	MaxInlineContent = 5000    // bytes of inline content accepted from a dump
	InlineContentMax = 64      // files up to this size are inlined when built from a directory
	MaxFileSize      = 1 << 53 // 1024 chunks of 2^43 bytes
)

// ErrInvalid classifies every error about a malformed tree or input
// (bad name, bad mode, oversized xattr, hardlink to a directory, …).
var ErrInvalid = errors.New("invalid composefs tree")

// InvalidError details an ErrInvalid: which path and what is wrong.
type InvalidError struct {
	Path   string
	Reason string
}

func (e *InvalidError) Error() string {
	if e.Path == "" {
		return "invalid composefs tree: " + e.Reason
	}
	return fmt.Sprintf("invalid composefs tree: %s: %s", e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(path, format string, args ...any) error {
	return &InvalidError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// Timespec is a modification time: seconds and nanoseconds since the epoch.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Less reports whether t is earlier than u.
func (t Timespec) Less(u Timespec) bool {
	return t.Sec < u.Sec || (t.Sec == u.Sec && t.Nsec < u.Nsec)
}

// Xattr is one extended attribute. Name and Value hold raw bytes.
type Xattr struct {
	Name  string
	Value string
}

// Node is one entry of a composefs tree.
//
// A hardlink entry (only possible from dump input or an image read back)
// has Link set to the node it names; all its other fields are ignored and
// it never becomes an inode of its own. Link always points at a node that
// is itself not a hardlink once the tree is resolved.
type Node struct {
	Name  string // entry name in the parent; "" for the root
	Mode  uint32 // st_mode: type bits and the 12 permission bits
	Nlink uint32 // recomputed for directories by the writer
	UID   uint32
	GID   uint32
	Rdev  uint64 // character and block devices only
	Size  uint64 // regular files: content size; symlinks: len(Payload)
	Mtime Timespec

	// Payload is the symlink target for symlinks, and for regular files
	// whose content lives in the object store the object path relative
	// to the store ("ab/cdef…", fsverity.Digest.ObjectPath).
	Payload string
	// Content is the inline content of a small regular file (nil when
	// the content is external). len(Content) == Size when set.
	Content []byte
	// Digest is the fs-verity digest of a regular file's content, or nil.
	Digest *fsverity.Digest
	// Xattrs in their given order; the writer sorts a copy.
	Xattrs []Xattr

	// Link, for a hardlink entry, is the node it links to.
	Link *Node

	// Children of a directory, sorted by name in byte order (strcmp).
	// Use AddChild to keep the order, or append and call SortChildren.
	Children []*Node

	parent *Node
}

// NewNode returns a node with the given name and mode and nlink 1.
func NewNode(name string, mode uint32) *Node {
	return &Node{Name: name, Mode: mode, Nlink: 1}
}

// Type returns the file type bits of the mode.
func (n *Node) Type() uint32 { return n.Mode & ModeTypeMask }

// IsDir reports whether n is a directory (hardlinks are never directories).
func (n *Node) IsDir() bool { return n.Link == nil && n.Type() == TypeDir }

// IsRegular reports whether n is a regular file.
func (n *Node) IsRegular() bool { return n.Type() == TypeRegular }

// IsSymlink reports whether n is a symbolic link.
func (n *Node) IsSymlink() bool { return n.Type() == TypeSymlink }

// IsWhiteout reports whether n is an overlayfs whiteout (char device 0/0).
func (n *Node) IsWhiteout() bool { return n.Type() == TypeChar && n.Rdev == 0 }

// IsHardlink reports whether n is a hardlink entry.
func (n *Node) IsHardlink() bool { return n.Link != nil }

// HasExternalData reports whether n is a regular file whose content lives
// outside the image (size > 0 and no inline content).
func (n *Node) HasExternalData() bool {
	return n.Link == nil && n.IsRegular() && n.Size > 0 && n.Content == nil
}

// Target follows hardlinks and returns the node that holds the inode. On
// a hardlink loop (which Validate rejects) it stops inside the loop.
func (n *Node) Target() *Node {
	for steps := 0; n.Link != nil && steps < maxLinkSteps; steps++ {
		n = n.Link
	}
	return n
}

// maxLinkSteps bounds hardlink chains followed by Target.
const maxLinkSteps = 1 << 16

// linkTarget follows hardlinks with cycle detection (Floyd's algorithm).
func linkTarget(n *Node) (*Node, bool) {
	slow, fast := n, n
	for fast.Link != nil && fast.Link.Link != nil {
		slow = slow.Link
		fast = fast.Link.Link
		if slow == fast {
			return nil, false
		}
	}
	if fast.Link != nil {
		fast = fast.Link
	}
	return fast, true
}

// Parent returns the directory containing n, or nil for the root or a
// detached node.
func (n *Node) Parent() *Node { return n.parent }

// Path returns the absolute path of n ("/" for the root).
func (n *Node) Path() string {
	if n.parent == nil {
		if n.Name == "" {
			return "/"
		}
		return "/" + n.Name
	}
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.Name)
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(parts[i])
	}
	return b.String()
}

// ValidName checks an entry name: 1..255 bytes, no '/', no NUL, not "."
// or "..".
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case name == "." || name == "..":
		return fmt.Errorf("name %q is reserved", name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name is %d bytes, longer than %d", len(name), MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// search returns the index where name is or would be inserted.
func (n *Node) search(name string) int {
	return sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
}

// Lookup returns the child called name, or nil.
func (n *Node) Lookup(name string) *Node {
	i := n.search(name)
	if i < len(n.Children) && n.Children[i].Name == name {
		return n.Children[i]
	}
	return nil
}

// AddChild inserts c into directory n, keeping the children sorted. It
// refuses invalid and duplicate names and non-directory parents.
func (n *Node) AddChild(c *Node) error {
	if !n.IsDir() {
		return invalid(n.Path(), "cannot add %q: not a directory", c.Name)
	}
	if err := ValidName(c.Name); err != nil {
		return invalid(n.Path(), "%v", err)
	}
	i := n.search(c.Name)
	if i < len(n.Children) && n.Children[i].Name == c.Name {
		return invalid(n.Path(), "duplicate entry %q", c.Name)
	}
	n.Children = append(n.Children, nil)
	copy(n.Children[i+1:], n.Children[i:])
	n.Children[i] = c
	c.parent = n
	return nil
}

// SortChildren sorts the children of n by name and sets their parent. Use
// it after appending many children directly; it refuses duplicates.
func (n *Node) SortChildren() error {
	sort.Slice(n.Children, func(i, j int) bool { return n.Children[i].Name < n.Children[j].Name })
	for i, c := range n.Children {
		if i > 0 && n.Children[i-1].Name == c.Name {
			return invalid(n.Path(), "duplicate entry %q", c.Name)
		}
		c.parent = n
	}
	return nil
}

// RemoveChild removes the child called name and reports whether it existed.
func (n *Node) RemoveChild(name string) bool {
	i := n.search(name)
	if i < len(n.Children) && n.Children[i].Name == name {
		n.Children[i].parent = nil
		n.Children = append(n.Children[:i], n.Children[i+1:]...)
		return true
	}
	return false
}

// GetXattr returns the value of the named xattr.
func (n *Node) GetXattr(name string) (string, bool) {
	for _, x := range n.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return "", false
}

// SetXattr sets an xattr, replacing an existing value in place, and
// enforces libcomposefs's input limits (name 1..255 bytes, value ≤ 65535
// bytes, per-inode budget ≤ 32767).
func (n *Node) SetXattr(name, value string) error {
	if name == "" {
		return invalid(n.Path(), "empty xattr name")
	}
	if len(name) > MaxXattrNameLen {
		return invalid(n.Path(), "xattr name of %d bytes is longer than %d", len(name), MaxXattrNameLen)
	}
	if len(value) > MaxXattrValueLen {
		return invalid(n.Path(), "xattr %q: value of %d bytes is longer than %d", name, len(value), MaxXattrValueLen)
	}
	budget := 12
	idx := -1
	for i, x := range n.Xattrs {
		if x.Name == name {
			idx = i
			continue
		}
		budget += 7 + len(x.Name) + len(x.Value)
	}
	budget += 7 + len(name) + len(value)
	if budget > MaxXattrBudget {
		return invalid(n.Path(), "xattrs take %d bytes, more than the %d an inode can hold (adding %q)", budget, MaxXattrBudget, name)
	}
	if idx >= 0 {
		n.Xattrs[idx].Value = value
		return nil
	}
	n.Xattrs = append(n.Xattrs, Xattr{Name: name, Value: value})
	return nil
}

// RemoveXattr deletes the named xattr and reports whether it existed.
func (n *Node) RemoveXattr(name string) bool {
	for i, x := range n.Xattrs {
		if x.Name == name {
			n.Xattrs = append(n.Xattrs[:i], n.Xattrs[i+1:]...)
			return true
		}
	}
	return false
}

// Walk calls fn for n and every node below it, depth-first, children in
// name order, parents before children. Hardlink entries are visited but
// not followed. Returning SkipDir from fn for a directory skips its
// children.
func (n *Node) Walk(fn func(path string, node *Node) error) error {
	return walk(n.Path(), n, fn)
}

// SkipDir can be returned by a Walk callback to skip a directory's children.
var SkipDir = errors.New("skip this directory")

func walk(path string, n *Node, fn func(string, *Node) error) error {
	if err := fn(path, n); err != nil {
		if errors.Is(err, SkipDir) {
			return nil
		}
		return err
	}
	if !n.IsDir() {
		return nil
	}
	prefix := path
	if prefix != "/" {
		prefix += "/"
	}
	for _, c := range n.Children {
		if err := walk(prefix+c.Name, c, fn); err != nil {
			return err
		}
	}
	return nil
}

// ValidateNode checks one node's own fields: a known file type, a symlink
// target of 1..4095 bytes, inline content matching the size and at most
// 5000 bytes, a size that the image format can describe, and hardlinks
// that do not name directories or loop.
func ValidateNode(n *Node) error {
	if n.Link != nil {
		t, ok := linkTarget(n)
		if !ok {
			return invalid(n.Path(), "hardlink loop")
		}
		if t.Type() == TypeDir {
			return invalid(n.Path(), "hardlink to directory %s", t.Path())
		}
		return nil
	}
	switch n.Type() {
	case TypeDir, TypeChar, TypeBlock, TypeFifo, TypeSocket:
	case TypeRegular:
		if n.Size > MaxFileSize {
			return invalid(n.Path(), "file size %d is larger than %d", n.Size, uint64(MaxFileSize))
		}
		if n.Content != nil {
			if uint64(len(n.Content)) != n.Size {
				return invalid(n.Path(), "inline content is %d bytes, size says %d", len(n.Content), n.Size)
			}
			if len(n.Content) > MaxInlineContent {
				return invalid(n.Path(), "inline content of %d bytes is larger than %d", len(n.Content), MaxInlineContent)
			}
		}
	case TypeSymlink:
		if n.Payload == "" {
			return invalid(n.Path(), "symlink without a target")
		}
		if len(n.Payload) > MaxSymlinkLen {
			return invalid(n.Path(), "symlink target of %d bytes is longer than %d", len(n.Payload), MaxSymlinkLen)
		}
	default:
		return invalid(n.Path(), "mode %o has no valid file type", n.Mode)
	}
	if n.Type() != TypeDir && len(n.Children) > 0 {
		return invalid(n.Path(), "only directories have children")
	}
	if len(n.Payload) > MaxSymlinkLen {
		return invalid(n.Path(), "payload of %d bytes is longer than %d", len(n.Payload), MaxSymlinkLen)
	}
	budget := 12
	for _, x := range n.Xattrs {
		if x.Name == "" || len(x.Name) > MaxXattrNameLen || len(x.Value) > MaxXattrValueLen {
			return invalid(n.Path(), "xattr %q: name must be 1..%d bytes and value at most %d bytes", x.Name, MaxXattrNameLen, MaxXattrValueLen)
		}
		budget += 7 + len(x.Name) + len(x.Value)
	}
	if budget > MaxXattrBudget {
		return invalid(n.Path(), "xattrs take %d bytes, more than the %d an inode can hold", budget, MaxXattrBudget)
	}
	return nil
}

// Validate checks every node of the tree rooted at n (see ValidateNode),
// that the root is a directory, and that every hardlink names a node of
// this tree.
func (n *Node) Validate() error {
	if !n.IsDir() {
		return invalid("/", "root is not a directory (mode %o)", n.Mode)
	}
	inTree := make(map[*Node]bool)
	var links []*Node
	// An explicit stack rather than Walk: a malformed tree may contain a
	// node twice (even a directory inside itself), which must be an error,
	// not endless recursion.
	stack := []*Node{n}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if inTree[c] {
			return invalid(c.Path(), "node appears more than once in the tree")
		}
		if err := ValidateNode(c); err != nil {
			return err
		}
		if c.Link != nil {
			links = append(links, c)
			continue
		}
		inTree[c] = true
		if c.IsDir() {
			for i := len(c.Children) - 1; i >= 0; i-- {
				stack = append(stack, c.Children[i])
			}
		}
	}
	for _, l := range links {
		if t := l.Target(); !inTree[t] {
			return invalid(l.Path(), "hardlink to a node outside the tree")
		}
	}
	return nil
}
