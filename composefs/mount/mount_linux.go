package mount

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"os"

	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"golang.org/x/sys/unix"
)

// Mount mounts the composefs image at target. The image is opened once;
// its digest (ExpectedDigest), header and objects (Verify) are checked
// from that descriptor, and the very same descriptor is what the kernel
// mounts (/proc/self/fd/N), so the bytes checked are the bytes mounted.
// Nothing stays mounted when it fails.
func Mount(ctx context.Context, image, target string, opts Options) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(image, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount: open image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("mount: image %s is not a regular file", image)
	}

	// 1. The image's own digest, from this descriptor.
	if opts.ExpectedDigest != nil {
		got, kernel, err := fsverity.MeasureOrCompute(ctx, f)
		if err != nil {
			return fmt.Errorf("mount: digest of image %s: %w", image, err)
		}
		if subtle.ConstantTimeCompare(got[:], opts.ExpectedDigest[:]) != 1 {
			return &DigestMismatchError{What: "image " + image, Expected: *opts.ExpectedDigest, Found: got}
		}
		log.Debug("image digest checked", "image", image, "digest", got.String(), "kernel", kernel)
	}

	// 2. Header and superblock.
	im, err := erofs.Open(f, st.Size())
	if err != nil {
		return fmt.Errorf("mount: image %s: %w: %w", image, ErrNotComposefs, err)
	}
	hasACL := im.Header.Flags&erofs.FlagHasACL != 0

	// 3. Object verification policy.
	switch opts.Verify {
	case VerifyKernel:
		if err := probeKernelVerity(im, opts.BaseDirs); err != nil {
			return err
		}
	case VerifyObjects:
		if err := verifyImageObjects(ctx, im, opts.BaseDirs); err != nil {
			return err
		}
		log.Debug("objects verified", "image", image)
	case VerifyNone:
		log.Warn("mounting without object verification", "image", image)
	}

	// 4. The plan: EROFS in a private directory, overlay on target.
	tmp := opts.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	}
	meta, err := os.MkdirTemp(tmp, ".composefs.") // mode 0700
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer func() {
		// Empty again: the EROFS mount was detached (or undone).
		if rerr := os.Remove(meta); rerr != nil {
			log.Warn("cannot remove the private EROFS mount point", "dir", meta, "err", rerr)
		}
	}()
	plan := Plan(PlanInput{
		ImageSource: fmt.Sprintf("/proc/self/fd/%d", f.Fd()),
		HasACL:      hasACL,
		MetaDir:     meta,
		Target:      target,
	}, opts)
	return apply(ctx, plan, log)
}

// Unmount unmounts a composefs mount from target. The EROFS mount under
// it was detached when it was mounted and goes with it (as does its loop
// device, if any: autoclear).
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// fsTypeName names the filesystem holding dir, for error messages.
func fsTypeName(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "the filesystem"
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.EROFS_SUPER_MAGIC_V1:
		return "erofs"
	}
	return fmt.Sprintf("the filesystem (type %#x)", uint32(st.Type))
}
