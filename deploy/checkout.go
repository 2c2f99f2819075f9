package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// lookupTree returns the node at the slash-separated absolute path p, or
// nil. Hardlinks are followed at the last component only; intermediate
// components must be directories.
func lookupTree(root *composefs.Node, p string) *composefs.Node {
	n := root
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if n == nil || !n.IsDir() {
			return nil
		}
		n = n.Lookup(part)
	}
	return n
}

// checkoutSubtree writes the subtree of root at sub (e.g. "/usr/etc") to
// dst, which must not exist, with every file's type, content, mode,
// owner, group, xattrs and mtime. File content comes from the inline
// content or from store (objects the caller has verified). Hardlinks
// inside the subtree become hardlinks; a hardlink to a file outside it
// becomes a copy. Sockets are skipped. A missing sub gives an empty
// directory.
func checkoutSubtree(ctx context.Context, root *composefs.Node, sub string, store *objstore.Store, dst string) error {
	n := lookupTree(root, sub)
	if n == nil || !n.IsDir() {
		return os.Mkdir(dst, 0o755)
	}
	c := &checkout{ctx: ctx, store: store, written: map[*composefs.Node]string{}}
	return c.write(n, dst)
}

type checkout struct {
	ctx     context.Context
	store   *objstore.Store
	written map[*composefs.Node]string // inode node → first path written
}

func (c *checkout) write(n *composefs.Node, p string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	n = n.Target()
	if first, ok := c.written[n]; ok {
		// A second name of an inode already written in the subtree.
		if err := os.Link(first, p); err != nil {
			return fmt.Errorf("checkout: %w", err)
		}
		return nil
	}
	switch n.Type() {
	case composefs.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("checkout: %w", err)
		}
		for _, ch := range n.Children {
			if err := c.write(ch, filepath.Join(p, ch.Name)); err != nil {
				return err
			}
		}
	case composefs.TypeRegular:
		if err := c.writeFile(n, p); err != nil {
			return err
		}
	case composefs.TypeSymlink:
		if err := os.Symlink(n.Payload, p); err != nil {
			return fmt.Errorf("checkout: %w", err)
		}
	case composefs.TypeChar, composefs.TypeBlock, composefs.TypeFifo:
		if err := unix.Mknod(p, n.Mode&(composefs.ModeTypeMask|0o600), int(n.Rdev)); err != nil {
			return fmt.Errorf("checkout: mknod %s: %w", p, err)
		}
	case composefs.TypeSocket:
		return nil
	default:
		return fmt.Errorf("checkout: %s: unknown file type %o", p, n.Type())
	}
	if err := applyMeta(p, n); err != nil {
		return err
	}
	if !n.IsDir() {
		c.written[n] = p
	}
	return nil
}

func (c *checkout) writeFile(n *composefs.Node, p string) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("checkout: %w", cerr)
		}
	}()
	switch {
	case n.Content != nil:
		if _, err := f.Write(n.Content); err != nil {
			return fmt.Errorf("checkout: %w", err)
		}
	case n.Size > 0:
		d, err := fsverity.ParseObjectPath(n.Payload)
		if err != nil {
			return fmt.Errorf("checkout %s: %w", p, err)
		}
		src, err := c.store.Open(d)
		if err != nil {
			return fmt.Errorf("checkout %s: %w", p, err)
		}
		defer src.Close()
		// io.Copy between files uses copy_file_range.
		copied, err := io.Copy(f, io.LimitReader(src, int64(n.Size)+1))
		if err != nil {
			return fmt.Errorf("checkout %s: %w", p, err)
		}
		if copied != int64(n.Size) {
			return fmt.Errorf("checkout %s: object %s has %d bytes, the tree says %d", p, d, copied, n.Size)
		}
	}
	return nil
}

// applyMeta sets owner, mode, xattrs and times of p from n, without
// following a symlink at p.
func applyMeta(p string, n *composefs.Node) error {
	if err := unix.Lchown(p, int(n.UID), int(n.GID)); err != nil {
		return fmt.Errorf("checkout: lchown %s: %w", p, err)
	}
	if !n.IsSymlink() {
		// After chown, which clears setuid/setgid bits.
		if err := unix.Chmod(p, n.Mode&composefs.ModePermMask); err != nil {
			return fmt.Errorf("checkout: chmod %s: %w", p, err)
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(p, x.Name, []byte(x.Value), 0); err != nil {
			if errors.Is(err, unix.EPERM) && n.IsSymlink() && strings.HasPrefix(x.Name, "user.") {
				continue // user.* xattrs are not allowed on symlinks
			}
			return fmt.Errorf("checkout: set xattr %s on %s: %w", x.Name, p, err)
		}
	}
	ts := unix.Timespec{Sec: n.Mtime.Sec, Nsec: int64(n.Mtime.Nsec)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("checkout: set times of %s: %w", p, err)
	}
	return nil
}
