package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// Names of the boot files inside a boot content directory.
const (
	VmlinuzFile   = "vmlinuz"
	InitramfsFile = "initramfs.img"
)

// bootContentName names the boot directory of a kernel: its version (when
// it is a plain file name) and a SHA-256 over the fs-verity digests of the
// kernel and the initramfs, so that commits shipping identical boot files
// share one copy.
func bootContentName(k *commit.Kernel) string {
	h := sha256.New()
	fmt.Fprintf(h, "cfs-boot-v1\nvmlinuz %s\n", k.Vmlinuz.Digest)
	if k.Initramfs != nil {
		fmt.Fprintf(h, "initramfs %s\n", k.Initramfs.Digest)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if safeName(k.Version) {
		return k.Version + "-" + sum
	}
	return sum
}

func safeName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			return false
		}
	}
	return true
}

// bootFiles describes the boot files of a deployment on the boot
// partition.
type bootFiles struct {
	Dir       string // absolute directory
	Linux     string // entry path of the kernel
	Initrd    string // entry path of the initramfs, "" if none
	Reused    bool   // the directory existed and verified
	Vmlinuz   string // absolute
	Initramfs string // absolute, "" if none
	// MadeDirs are the parent directories this install created, deepest
	// first, for the caller to remove (when empty) if it rolls back.
	MadeDirs []string
}

// bootPrefix is what entry paths start with: "" when boot/ is its own
// file system (paths are relative to the partition holding the entries),
// "/boot" when it is a directory of the sysroot's file system.
func (s *Sysroot) bootPrefix() string {
	var a, b unix.Stat_t
	if unix.Stat(s.root, &a) == nil && unix.Stat(s.bootDir(), &b) == nil && a.Dev != b.Dev {
		return ""
	}
	return "/" + BootDir
}

// BootPath resolves a path of a boot entry (linux, initrd) to a file name.
func (s *Sysroot) BootPath(entryPath string) string {
	if s.bootPrefix() == "" {
		return filepath.Join(s.bootDir(), filepath.FromSlash(entryPath))
	}
	return filepath.Join(s.root, filepath.FromSlash(entryPath))
}

func (s *Sysroot) bootFilesFor(stateroot string, k *commit.Kernel) *bootFiles {
	name := bootContentName(k)
	rel := path.Join(BootFiles, stateroot, name)
	b := &bootFiles{
		Dir:     filepath.Join(s.bootDir(), filepath.FromSlash(rel)),
		Linux:   s.bootPrefix() + "/" + rel + "/" + VmlinuzFile,
		Vmlinuz: filepath.Join(s.bootDir(), filepath.FromSlash(rel), VmlinuzFile),
	}
	if k.Initramfs != nil {
		b.Initrd = s.bootPrefix() + "/" + rel + "/" + InitramfsFile
		b.Initramfs = filepath.Join(b.Dir, InitramfsFile)
	}
	return b
}

// installBootFiles puts the commit's kernel and initramfs on the boot
// partition. An existing directory of the same content name is reused
// after its files verify (a damaged one is replaced). A new copy is
// streamed from the tree (inline content or the object store) through a
// hasher into a staging directory, each file checked against the signed
// digest and size, fsynced, and the directory renamed into place. created
// tells the caller to remove the directory if the operation fails later.
func (s *Sysroot) installBootFiles(ctx context.Context, stateroot string, m *commit.Metadata, tree *composefs.Node) (b *bootFiles, created bool, err error) {
	k := m.Kernel
	b = s.bootFilesFor(stateroot, k)
	exists := false
	if _, err := os.Lstat(b.Dir); err == nil {
		exists = true
		err := verifyBootDir(ctx, b, k)
		if err == nil {
			b.Reused = true
			return b, false, nil
		}
		s.log.Warn("boot files damaged, replacing them", "dir", b.Dir, "err", err)
	}
	parent := filepath.Dir(b.Dir)
	for d := parent; d != s.bootDir() && d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		b.MadeDirs = append(b.MadeDirs, d)
	}
	if err := mkdirDurable(parent); err != nil {
		return nil, false, err
	}
	tmp, err := os.MkdirTemp(parent, stagingPref+filepath.Base(b.Dir)+"-")
	if err != nil {
		return nil, false, err
	}
	defer func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}()
	if err := s.copyBootFile(ctx, tree, k.Vmlinuz, filepath.Join(tmp, VmlinuzFile)); err != nil {
		return nil, false, err
	}
	if k.Initramfs != nil {
		if err := s.copyBootFile(ctx, tree, *k.Initramfs, filepath.Join(tmp, InitramfsFile)); err != nil {
			return nil, false, err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, false, err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return nil, false, err
	}
	if exists {
		if err := exchange(tmp, b.Dir); err != nil {
			return nil, false, err
		}
	} else if err := os.Rename(tmp, b.Dir); err != nil {
		return nil, false, err
	} else {
		tmp = ""
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// copyBootFile writes the tree's file ref.Path to dst, checking that the
// tree's file is the one the signed metadata names and that the bytes
// written hash to the signed digest.
func (s *Sysroot) copyBootFile(ctx context.Context, tree *composefs.Node, ref commit.FileRef, dst string) (err error) {
	what := "boot file " + ref.Path
	n := lookupTree(tree, ref.Path)
	if n == nil {
		return verifyErr(what, errors.New("not in the commit's tree"))
	}
	n = n.Target()
	if !n.IsRegular() || int64(n.Size) != ref.Size {
		return verifyErr(what, fmt.Errorf("the tree's file (size %d) is not the %d-byte regular file the commit names", n.Size, ref.Size))
	}
	var src io.Reader
	switch {
	case n.Content != nil:
		src = bytes.NewReader(n.Content)
	default:
		d, err := fsverity.ParseObjectPath(n.Payload)
		if err != nil {
			return verifyErr(what, err)
		}
		if d != ref.Digest {
			return pull.Mismatch(what+" (tree)", ref.Digest, d)
		}
		f, err := s.repo.Objects.Open(d)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: object %s: %w", what, d, ErrMissingObject)
		}
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	h := fsverity.NewHasher(fsverity.SHA256)
	written, err := io.Copy(io.MultiWriter(out, h), &ctxReader{ctx: ctx, r: io.LimitReader(src, ref.Size+1)})
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", what, dst, err)
	}
	if written != ref.Size {
		return verifyErr(what, fmt.Errorf("%d bytes, the commit says %d", written, ref.Size))
	}
	if got := h.Digest(); got != ref.Digest {
		return pull.Mismatch(what, ref.Digest, got)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dst, err)
	}
	return nil
}

// verifyBootDir checks the files of an existing boot directory against
// the signed digests.
func verifyBootDir(ctx context.Context, b *bootFiles, k *commit.Kernel) error {
	check := func(p string, ref commit.FileRef) error {
		d, n, err := fsverity.DigestFile(ctx, p)
		if err != nil {
			return err
		}
		if n != ref.Size || d != ref.Digest {
			return pull.Mismatch(p, ref.Digest, d)
		}
		return nil
	}
	if err := check(b.Vmlinuz, k.Vmlinuz); err != nil {
		return err
	}
	if k.Initramfs != nil {
		return check(b.Initramfs, *k.Initramfs)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
