// Package dump reads and writes the composefs dump text format
// (composefs-dump(5)): one line per file, as upstream `composefs-info dump`
// prints it and `mkcomposefs --from-file` reads it.
//
// Parse accepts what upstream mkcomposefs 1.0.8 accepts and rejects what
// it rejects while reading the dump (the few deliberate exceptions are
// listed on Parse); checks that upstream only makes when writing the image
// (a regular file too large for the chunk table) are left to
// composefs.Node.Validate, which the image writer calls. Write, WriteLs
// and WriteObjects print a tree as `composefs-info dump`, `ls` and
// `objects` print an image.
package dump

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// DefaultMaxLineLen is the longest line Parse accepts unless
// ParseOptions.MaxLineLen says otherwise. The longest meaningful line is
// about 120 KiB plus the path (65535 bytes of escaped xattrs, 4095 bytes of
// payload and 5000 of content, each up to 4× longer escaped).
const DefaultMaxLineLen = 1 << 20

// maxXattrText is upstream's cap on the escaped xattr part of a line
// (UINT16_MAX, "Too many xattrs").
const maxXattrText = 1<<16 - 1

// ParseOptions tune Parse.
type ParseOptions struct {
	// Strict adds the checks upstream makes when CFS_PARSE_STRICT is set:
	// the last line must end with a newline, RDEV must be 0 for anything
	// but character and block devices, a symlink's SIZE must equal the
	// length of its target and a symlink must not have CONTENT.
	Strict bool
	// MaxLineLen bounds the length of one line in bytes; longer lines are
	// a *SyntaxError. 0 means DefaultMaxLineLen.
	MaxLineLen int
}

// SyntaxError reports a line that is not well-formed dump text: a bad
// escape, a malformed number or digest, an xattr without '=', a NUL byte,
// an overlong line. It matches composefs.ErrInvalid with errors.Is.
type SyntaxError struct {
	Line int // 1-based
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("dump: line %d: syntax error: %s", e.Line, e.Msg)
}

// Unwrap makes errors.Is(err, composefs.ErrInvalid) true.
func (e *SyntaxError) Unwrap() error { return composefs.ErrInvalid }

// LineError reports a well-formed line that describes an invalid tree: an
// unknown file type, a missing parent, a duplicate path, a bad hardlink, a
// limit exceeded. Err wraps composefs.ErrInvalid (usually a
// *composefs.InvalidError naming the path).
type LineError struct {
	Line int // 1-based; 0 when the error is about the input as a whole
	Err  error
}

func (e *LineError) Error() string {
	if e.Line == 0 {
		return "dump: " + e.Err.Error()
	}
	return fmt.Sprintf("dump: line %d: %v", e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// Field indexes of the fixed part of a line.
const (
	fieldPath = iota
	fieldSize
	fieldMode
	fieldNlink
	fieldUID
	fieldGID
	fieldRdev
	fieldMtime
	fieldPayload
	fieldContent
	fieldDigest
	numFields
)

var fieldNames = [numFields]string{"PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT", "DIGEST"}

// hardlink is a hardlink line waiting for the whole tree (upstream's
// hardlink_fixup).
type hardlink struct {
	node   *composefs.Node
	target string // unescaped target path
	line   int
	ok     bool // target field was not "-"
}

type parser struct {
	opts    ParseOptions
	root    *composefs.Node
	links   []hardlink
	line    int
	pathTxt string // escaped PATH field of the current line, for messages
	scratch []byte
}

// Parse reads a dump and returns the tree it describes. Lines are read one
// at a time (bounded by ParseOptions.MaxLineLen); the root line "/" must
// come first and every parent before its children; children are kept
// sorted; hardlink lines ("@" before MODE) are resolved once the whole
// input is read, so Node.Link always points at a non-hardlink node whose
// NLINK is the one on its own line.
//
// Errors are *SyntaxError or *LineError (both match composefs.ErrInvalid)
// or an I/O error from r.
//
// Deliberate differences from upstream, all on inputs upstream mishandles:
// DIGEST must be empty, "-" or exactly 64 hex digits (upstream ignores its
// parse error and keeps garbage, or uninitialised bytes when empty; here
// empty means no digest), a UID/GID/NLINK/MODE beyond 32 bits is an error
// (upstream truncates), an invalid GID or RDEV is an error even when UID is
// not 0 (upstream skips the check then), NSEC beyond 32 bits is an error,
// and an escaped NUL (`\x00`) in a path, payload or xattr name is an error
// (upstream silently truncates there).
func Parse(r io.Reader, opts ParseOptions) (*composefs.Node, error) {
	maxLen := opts.MaxLineLen
	if maxLen <= 0 {
		maxLen = DefaultMaxLineLen
	}
	p := &parser{opts: opts}
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // holds a line longer than br's buffer
	for {
		p.line++
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(long) > maxLen+1 {
					return nil, &SyntaxError{Line: p.line, Msg: fmt.Sprintf("line longer than %d bytes", maxLen)}
				}
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		last := false
		switch {
		case err == nil:
			line = line[:len(line)-1]
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return p.finish()
			}
			if opts.Strict {
				return nil, &SyntaxError{Line: p.line, Msg: "missing newline at the end of the last line"}
			}
			last = true
		default:
			return nil, fmt.Errorf("dump: reading line %d: %w", p.line, err)
		}
		if len(line) > maxLen {
			return nil, &SyntaxError{Line: p.line, Msg: fmt.Sprintf("line longer than %d bytes", maxLen)}
		}
		if err := p.parseLine(line); err != nil {
			return nil, err
		}
		if last {
			return p.finish()
		}
	}
}

func (p *parser) syntax(format string, args ...any) error {
	return &SyntaxError{Line: p.line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) invalid(format string, args ...any) error {
	return &LineError{Line: p.line, Err: &composefs.InvalidError{Path: p.pathTxt, Reason: fmt.Sprintf(format, args...)}}
}

func (p *parser) wrap(err error) error {
	return &LineError{Line: p.line, Err: err}
}

// unescape returns the unescaped field as a string; what names the field
// in errors.
func (p *parser) unescape(what string, s []byte) (string, error) {
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s), nil
	}
	var err error
	p.scratch, err = appendUnescaped(p.scratch[:0], s)
	if err != nil {
		return "", p.syntax("%s: %v", what, err)
	}
	return string(p.scratch), nil
}

// optional unescapes an optional field: "-" means absent.
func (p *parser) optional(field int, s []byte) (string, bool, error) {
	if len(s) == 1 && s[0] == '-' {
		return "", false, nil
	}
	v, err := p.unescape(fieldNames[field], s)
	return v, err == nil, err
}

func (p *parser) uint(field int, s []byte, base, limit uint64) (uint64, error) {
	v, ok := parseUint(s, base)
	if !ok {
		return 0, p.syntax("%s: invalid integer %q", fieldNames[field], clip(string(s)))
	}
	if v > limit {
		return 0, p.syntax("%s: %d does not fit in %d bits", fieldNames[field], v, bits.Len64(limit))
	}
	return v, nil
}

// splitField cuts s at the first space, as upstream's split_at: a missing
// field is empty.
func splitField(s []byte) (field, rest []byte) {
	if i := bytes.IndexByte(s, ' '); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, nil
}

const maxUint32 = 1<<32 - 1

func (p *parser) parseLine(line []byte) error {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return p.syntax("NUL byte at offset %d", i)
	}
	var f [numFields][]byte
	rest := line
	for i := range f {
		f[i], rest = splitField(rest)
	}
	p.pathTxt = clip(string(f[fieldPath]))

	path, err := p.unescape("PATH", f[fieldPath])
	if err != nil {
		return err
	}
	if path == "" {
		return p.syntax("empty PATH")
	}
	if strings.IndexByte(path, 0) >= 0 {
		return p.syntax(`PATH %q contains an escaped NUL byte`, p.pathTxt)
	}

	modeText := f[fieldMode]
	isLink := len(modeText) > 0 && modeText[0] == '@'
	if isLink {
		modeText = modeText[1:]
	}
	mode64, err := p.uint(fieldMode, modeText, 8, maxUint32)
	if err != nil {
		return err
	}
	mode := uint32(mode64)
	if !validType(mode) {
		return p.invalid("mode %o has no valid file type", mode)
	}
	// The image stores 16 bits of mode; keep the type and permission bits.
	n := composefs.NewNode("", mode&(composefs.ModeTypeMask|composefs.ModePermMask))
	if err := p.add(path, n); err != nil {
		return err
	}

	if isLink {
		// Only PATH, MODE and PAYLOAD count on a hardlink line.
		if n.Type() == composefs.TypeDir {
			return p.invalid("directories cannot be hardlinked")
		}
		target, ok, err := p.optional(fieldPayload, f[fieldPayload])
		if err != nil {
			return err
		}
		if strings.IndexByte(target, 0) >= 0 {
			return p.syntax("PAYLOAD (hardlink target) contains an escaped NUL byte")
		}
		p.links = append(p.links, hardlink{node: n, target: target, line: p.line, ok: ok})
		return nil
	}
	return p.fill(n, f, rest)
}

// fill sets the fields of a non-hardlink node from its line.
func (p *parser) fill(n *composefs.Node, f [numFields][]byte, xattrs []byte) error {
	size, err := p.uint(fieldSize, f[fieldSize], 10, math.MaxUint64)
	if err != nil {
		return err
	}
	nlink, err := p.uint(fieldNlink, f[fieldNlink], 10, maxUint32)
	if err != nil {
		return err
	}
	uid, err := p.uint(fieldUID, f[fieldUID], 10, maxUint32)
	if err != nil {
		return err
	}
	gid, err := p.uint(fieldGID, f[fieldGID], 10, maxUint32)
	if err != nil {
		return err
	}
	rdev, err := p.uint(fieldRdev, f[fieldRdev], 10, math.MaxUint64)
	if err != nil {
		return err
	}
	mtime, err := p.mtime(f[fieldMtime])
	if err != nil {
		return err
	}
	payload, hasPayload, err := p.optional(fieldPayload, f[fieldPayload])
	if err != nil {
		return err
	}
	var content []byte
	hasContent := false
	if c := f[fieldContent]; !(len(c) == 1 && c[0] == '-') {
		hasContent = true
		content, err = appendUnescaped(make([]byte, 0, len(c)), c)
		if err != nil {
			return p.syntax("CONTENT: %v", err)
		}
		if uint64(len(content)) != size {
			return p.invalid("CONTENT has %d bytes, SIZE says %d", len(content), size)
		}
	}
	// An empty DIGEST (a line cut short after PAYLOAD or CONTENT) is
	// absent: upstream keeps uninitialised bytes there, which only matter
	// for regular files with external data.
	digestText, hasDigest, err := p.optional(fieldDigest, f[fieldDigest])
	if err != nil {
		return err
	}
	hasDigest = hasDigest && digestText != ""

	n.Nlink = uint32(nlink)
	n.UID = uint32(uid)
	n.GID = uint32(gid)
	n.Mtime = mtime
	switch n.Type() {
	case composefs.TypeChar, composefs.TypeBlock:
		n.Rdev = rdev
	default:
		if p.opts.Strict && rdev != 0 {
			return p.invalid("RDEV %d on a file that is not a device", rdev)
		}
	}

	if strings.IndexByte(payload, 0) >= 0 {
		return p.syntax("PAYLOAD contains an escaped NUL byte")
	}
	if n.Type() == composefs.TypeSymlink {
		if !hasPayload || payload == "" {
			return p.invalid("symlink without a target")
		}
		if len(payload) > composefs.MaxSymlinkLen {
			return p.invalid("symlink target of %d bytes is longer than %d", len(payload), composefs.MaxSymlinkLen)
		}
		n.Payload = payload
		n.Size = uint64(len(payload)) // SIZE is ignored for symlinks
		if p.opts.Strict {
			if size != n.Size {
				return p.invalid("symlink SIZE %d differs from its target length %d", size, n.Size)
			}
			if len(content) > 0 {
				return p.invalid("symlink with CONTENT")
			}
		}
	} else {
		// Upstream refuses any payload of PATH_MAX bytes or more.
		if len(payload) > composefs.MaxSymlinkLen {
			return p.invalid("PAYLOAD of %d bytes is longer than %d", len(payload), composefs.MaxSymlinkLen)
		}
		n.Payload = payload
		n.Size = size
		if hasContent {
			if len(content) > composefs.MaxInlineContent {
				return p.invalid("inline content of %d bytes is larger than %d", len(content), composefs.MaxInlineContent)
			}
			if len(content) > 0 {
				n.Content = content
			}
		}
	}

	if hasDigest {
		d, err := fsverity.ParseDigest(digestText)
		if err != nil {
			return p.syntax("DIGEST: %v", err)
		}
		n.Digest = &d
	}

	if len(xattrs) > maxXattrText {
		return p.invalid("too many xattrs: %d bytes of xattr text, more than %d", len(xattrs), maxXattrText)
	}
	for len(xattrs) > 0 {
		var x []byte
		x, xattrs = splitField(xattrs)
		if err := p.xattr(n, x); err != nil {
			return err
		}
	}
	return nil
}

// mtime parses SEC.NSEC: two integers, "1.1" is one second and one
// nanosecond. SEC is read as upstream does (strtoull into a time_t, so
// "-1" is -1); NSEC is kept as the 32 bits the image stores.
func (p *parser) mtime(s []byte) (composefs.Timespec, error) {
	secText, nsecText, ok := bytes.Cut(s, []byte{'.'})
	if !ok {
		return composefs.Timespec{}, p.syntax("MTIME %q is not SEC.NSEC", clip(string(s)))
	}
	sec, err := p.uint(fieldMtime, secText, 10, math.MaxUint64)
	if err != nil {
		return composefs.Timespec{}, err
	}
	nsec, err := p.uint(fieldMtime, nsecText, 10, maxUint32)
	if err != nil {
		return composefs.Timespec{}, err
	}
	return composefs.Timespec{Sec: int64(sec), Nsec: uint32(nsec)}, nil
}

func (p *parser) xattr(n *composefs.Node, x []byte) error {
	nameText, valueText, ok := bytes.Cut(x, []byte{'='})
	if !ok {
		return p.syntax("xattr %q has no '='", clip(string(x)))
	}
	name, err := p.unescape("xattr name", nameText)
	if err != nil {
		return err
	}
	if strings.IndexByte(name, 0) >= 0 {
		return p.syntax("xattr name %q contains an escaped NUL byte", clip(string(nameText)))
	}
	value, err := p.unescape("xattr value", valueText)
	if err != nil {
		return err
	}
	if err := n.SetXattr(name, value); err != nil {
		return p.wrap(err)
	}
	return nil
}

// add inserts n at path (upstream's tree_add_node): "/" is the root, which
// must come first; other paths name an existing directory and a new entry.
// Like upstream, repeated slashes are one separator and a missing leading
// slash is allowed.
func (p *parser) add(path string, n *composefs.Node) error {
	if path == "/" {
		if n.Type() != composefs.TypeDir {
			return p.invalid("root must be a directory, mode is %o", n.Mode)
		}
		if p.root != nil {
			return p.invalid("second root line")
		}
		p.root = n
		return nil
	}
	if p.root == nil {
		return p.invalid(`the first line must be the root directory "/"`)
	}
	parent := p.root
	rest := path
	for {
		rest = strings.TrimLeft(rest, "/")
		name, after, more := strings.Cut(rest, "/")
		if !more {
			break
		}
		child := parent.Lookup(name)
		if child == nil {
			return p.invalid("parent directory %s is missing", escapedPath(path[:len(path)-len(after)-1]))
		}
		parent, rest = child, after
	}
	if parent.Type() != composefs.TypeDir {
		return p.invalid("parent %s is not a directory", escapedPath(parent.Path()))
	}
	if rest == "." || rest == ".." {
		return p.invalid("%q is not a valid name", rest)
	}
	n.Name = rest
	if err := parent.AddChild(n); err != nil {
		return p.wrap(err)
	}
	return nil
}

// finish checks the input had a root and resolves the hardlinks.
func (p *parser) finish() (*composefs.Node, error) {
	if p.root == nil {
		return nil, &LineError{Err: &composefs.InvalidError{Reason: "empty dump: no root line"}}
	}
	if err := p.resolveLinks(); err != nil {
		return nil, err
	}
	return p.root, nil
}

// resolveLinks points every hardlink at the node it finally names
// (following hardlinks to hardlinks) and rejects missing targets, links
// to themselves, loops and links to directories.
func (p *parser) resolveLinks() error {
	for _, l := range p.links {
		p.line = l.line
		p.pathTxt = escapedPath(l.node.Path())
		if !l.ok {
			return p.invalid("hardlink without a target path")
		}
		t := lookupPath(p.root, l.target)
		if t == nil {
			return p.invalid("hardlink target %s does not exist", escapedPath(l.target))
		}
		if t == l.node {
			return p.invalid("hardlink to itself")
		}
		l.node.Link = t
	}
	final := make(map[*composefs.Node]*composefs.Node, len(p.links))
	for _, l := range p.links {
		p.line = l.line
		p.pathTxt = escapedPath(l.node.Path())
		t, err := p.follow(l.node, final)
		if err != nil {
			return err
		}
		if t.Type() == composefs.TypeDir {
			return p.invalid("hardlink to directory %s", escapedPath(t.Path()))
		}
	}
	for _, l := range p.links {
		l.node.Link = final[l.node]
	}
	return nil
}

// follow returns the non-hardlink node at the end of n's chain of links,
// memoising every node it passes in final.
func (p *parser) follow(n *composefs.Node, final map[*composefs.Node]*composefs.Node) (*composefs.Node, error) {
	var chain []*composefs.Node
	onChain := map[*composefs.Node]bool{}
	t := n
	for t.Link != nil {
		if f, ok := final[t]; ok {
			t = f
			break
		}
		if onChain[t] {
			return nil, p.invalid("hardlink loop through %s", escapedPath(t.Path()))
		}
		onChain[t] = true
		chain = append(chain, t)
		t = t.Link
	}
	for _, c := range chain {
		final[c] = t
	}
	return t, nil
}

// lookupPath finds a node by path as upstream's lookup_path: empty
// components are skipped, so "" and "/" name the root.
func lookupPath(root *composefs.Node, path string) *composefs.Node {
	n := root
	for _, name := range strings.Split(path, "/") {
		if name == "" {
			continue
		}
		if n = n.Lookup(name); n == nil {
			return nil
		}
	}
	return n
}

func validType(mode uint32) bool {
	switch mode & composefs.ModeTypeMask {
	case composefs.TypeRegular, composefs.TypeDir, composefs.TypeSymlink, composefs.TypeBlock,
		composefs.TypeChar, composefs.TypeSocket, composefs.TypeFifo:
		return true
	}
	return false
}

// escapedPath returns a path as the dump prints it, shortened for an error
// message.
func escapedPath(s string) string {
	return clip(string(appendEscaped(nil, s, 0)))
}

// clip shortens s for an error message.
func clip(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		return s[:maxLen] + "…"
	}
	return s
}
