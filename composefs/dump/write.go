package dump

import (
	"bufio"
	"encoding/hex"
	"io"
	"slices"
	"strconv"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// Write prints the tree rooted at root exactly as `composefs-info dump`
// prints an image: one line per node, depth-first, children in name
// order, the root ("/") first. A hardlink entry prints "@" before the mode,
// the fields and xattrs of the node it links to, and that node's path as
// PAYLOAD. RDEV is printed as 32 bits, as upstream does. Write prints
// every node the tree has (whiteouts included), and xattrs in the order of
// Node.Xattrs.
func Write(w io.Writer, root *composefs.Node) error {
	d := dumper{w: bufio.NewWriterSize(w, 64<<10)}
	d.path = append(d.path, root.Path()...)
	if err := d.write(root); err != nil {
		return err
	}
	return d.w.Flush()
}

// dumper walks a tree as Node.Walk does, keeping the path in one buffer.
type dumper struct {
	w          *bufio.Writer
	path, line []byte
}

func (d *dumper) write(n *composefs.Node) error {
	d.line = appendEntry(d.line[:0], d.path, n)
	if _, err := d.w.Write(d.line); err != nil {
		return err
	}
	if !n.IsDir() {
		return nil
	}
	base := len(d.path)
	if string(d.path) != "/" {
		d.path = append(d.path, '/')
	}
	prefix := len(d.path)
	for _, c := range n.Children {
		d.path = append(d.path[:prefix], c.Name...)
		if err := d.write(c); err != nil {
			return err
		}
	}
	d.path = d.path[:base]
	return nil
}

// appendEntry appends the dump line of n (at path) to dst.
func appendEntry(dst []byte, path []byte, n *composefs.Node) []byte {
	t := n.Target()
	dst = appendEscaped(dst, path, 0)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, t.Size, 10)
	dst = append(dst, ' ')
	if n.Link != nil {
		dst = append(dst, '@')
	}
	dst = strconv.AppendUint(dst, uint64(t.Mode), 8)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(t.Nlink), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(t.UID), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(t.GID), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(uint32(t.Rdev)), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, t.Mtime.Sec, 10)
	dst = append(dst, '.')
	dst = strconv.AppendUint(dst, uint64(t.Mtime.Nsec), 10)
	dst = append(dst, ' ')

	payload := t.Payload
	if n.Link != nil {
		payload = t.Path()
	}
	var digest [2 * len(fsverity.Digest{})]byte
	if t.Digest != nil {
		hex.Encode(digest[:], t.Digest[:])
	}
	switch {
	case payload == "":
		dst = append(dst, '-')
	case t.Digest != nil && len(payload) == len(digest)+1 && payload[:2] == string(digest[:2]) &&
		payload[2] == '/' && payload[3:] == string(digest[2:]):
		dst = append(dst, payload...) // the object path: nothing to escape
	default:
		dst = appendEscaped(dst, payload, escLoneDash)
	}
	dst = append(dst, ' ')
	if len(t.Content) == 0 {
		dst = append(dst, '-')
	} else {
		dst = appendEscaped(dst, t.Content, escLoneDash)
	}
	dst = append(dst, ' ')
	if t.Digest == nil {
		dst = append(dst, '-')
	} else {
		dst = append(dst, digest[:]...)
	}
	for _, x := range t.Xattrs {
		dst = append(dst, ' ')
		dst = appendEscaped(dst, x.Name, escEqual)
		dst = append(dst, '=')
		dst = appendEscaped(dst, x.Value, escEqual)
	}
	return append(dst, '\n')
}

// WriteLs prints the tree as `composefs-info ls` does: every path but the
// root's (spaces not escaped), followed by "/\t" for a directory, "\t-> "
// and the target for a symlink, "\t@ " and the payload for a regular file
// with one; hardlink entries print their path only.
func WriteLs(w io.Writer, root *composefs.Node) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	err := root.Walk(func(path string, n *composefs.Node) error {
		if n == root {
			return nil
		}
		line = appendEscaped(line[:0], path, escKeepSpace)
		switch {
		case n.Link != nil:
		case n.IsDir():
			line = append(line, "/\t"...)
		case n.IsSymlink():
			line = append(line, "\t-> "...)
			line = appendEscaped(line, n.Payload, 0)
		case n.IsRegular() && n.Payload != "":
			line = append(line, "\t@ "...)
			line = appendEscaped(line, n.Payload, 0)
		}
		line = append(line, '\n')
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Objects returns the distinct payloads (object paths) of the regular
// files with external data in the tree, sorted in byte order: the objects
// an image of the tree references.
func Objects(root *composefs.Node) []string {
	seen := map[string]bool{}
	var out []string
	_ = root.Walk(func(_ string, n *composefs.Node) error {
		if n.HasExternalData() && n.Payload != "" && !seen[n.Payload] {
			seen[n.Payload] = true
			out = append(out, n.Payload)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// WriteObjects prints Objects(root) one per line, unescaped, as
// `composefs-info objects` does.
func WriteObjects(w io.Writer, root *composefs.Node) error {
	bw := bufio.NewWriter(w)
	for _, o := range Objects(root) {
		if _, err := bw.WriteString(o); err != nil {
			return err
		}
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
	}
	return bw.Flush()
}
