package initramfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/deploy/cmdline"
)

// physicalRoot makes the physical root available and returns its path:
// the caller's PhysicalRoot as it is; else the sysroot's mount (systemd's
// sysroot.mount mounted root= there), moved aside to <run>/cfs/physical;
// else root= mounted read-only at <run>/cfs/physical. owned reports that
// cfs mounted it (and may change its flags).
func (b *booter) physicalRoot(ctx context.Context, boot *cmdline.Boot) (dir string, owned bool, err error) {
	if b.o.PhysicalRoot != "" {
		st, err := os.Stat(b.o.PhysicalRoot)
		if err != nil {
			return "", false, err
		}
		if !st.IsDir() {
			return "", false, fmt.Errorf("%s is not a directory", b.o.PhysicalRoot)
		}
		return b.o.PhysicalRoot, false, nil
	}
	dst := filepath.Join(b.o.RunDir, PhysicalDir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", false, err
	}
	mounted, err := isMountPoint(b.o.Sysroot)
	if err != nil {
		return "", false, err
	}
	if mounted {
		// A bind plus a detach rather than MS_MOVE: a move is refused
		// under a shared parent, and systemd makes / shared.
		if err := unix.Mount(b.o.Sysroot, dst, "", unix.MS_BIND, ""); err != nil {
			return "", false, fmt.Errorf("move the mounted %s to %s: %w", b.o.Sysroot, dst, err)
		}
		if err := unix.Unmount(b.o.Sysroot, unix.MNT_DETACH); err != nil {
			_ = unix.Unmount(dst, unix.MNT_DETACH)
			return "", false, fmt.Errorf("move the mounted %s to %s: %w", b.o.Sysroot, dst, err)
		}
		sysroot := b.o.Sysroot
		b.push("put the physical root back on "+sysroot, func() error {
			if err := unix.Mount(dst, sysroot, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			return unix.Unmount(dst, unix.MNT_DETACH)
		})
		b.log.Info("physical root taken from the mounted sysroot", "sysroot", sysroot, "now", dst)
		return dst, true, nil
	}
	if boot.Root == nil {
		return "", false, fmt.Errorf("no root= on the kernel command line and nothing mounted on %s", b.o.Sysroot)
	}
	dev, err := waitDevice(ctx, boot.Root, b.o.DeviceTimeout)
	if err != nil {
		return "", false, err
	}
	args := cmdline.Split(b.o.Cmdline)
	flags, _ := cmdline.Get(args, "rootflags")
	types := []string{}
	if t, ok := cmdline.Get(args, "rootfstype"); ok && t != "" {
		types = strings.Split(t, ",")
	} else if types, err = blockFilesystems(); err != nil {
		return "", false, err
	}
	var errs []error
	for _, t := range types {
		err := unix.Mount(dev, dst, t, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, flags)
		if err == nil {
			b.push("unmount the physical root", func() error { return unix.Unmount(dst, unix.MNT_DETACH) })
			b.log.Info("physical root mounted read-only", "device", dev, "type", t, "dir", dst)
			return dst, true, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t, err))
	}
	return "", false, fmt.Errorf("mount %s (root=%s) on %s: %w", dev, boot.Root, dst, errors.Join(errs...))
}

// rootDevice maps root= to a device path.
func rootDevice(r *cmdline.Root) (string, error) {
	switch r.Kind {
	case cmdline.RootPath:
		return r.Value, nil
	case cmdline.RootUUID:
		return "/dev/disk/by-uuid/" + strings.ToLower(r.Value), nil
	case cmdline.RootPartUUID:
		if strings.Contains(r.Value, "/") {
			return "", fmt.Errorf("root=PARTUUID=%s: PARTNROFF is not supported", r.Value)
		}
		return "/dev/disk/by-partuuid/" + strings.ToLower(r.Value), nil
	case cmdline.RootLabel:
		return "/dev/disk/by-label/" + udevEscape(r.Value), nil
	case cmdline.RootPartLabel:
		return "/dev/disk/by-partlabel/" + udevEscape(r.Value), nil
	}
	return "", fmt.Errorf("root=%s: cfs mounts only device paths, UUID=, PARTUUID=, LABEL= and PARTLABEL= itself; let systemd mount it on the sysroot instead", r)
}

// udevEscape escapes a label as udev names its /dev/disk/by-label links
// ('/' and characters outside [A-Za-z0-9#+-.:=@_] as \xNN).
func udevEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("#+-.:=@_", c) >= 0 || c >= 0x80 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// waitDevice waits until the root device exists (udev may still be
// creating it), for at most timeout.
func waitDevice(ctx context.Context, r *cmdline.Root, timeout time.Duration) (string, error) {
	dev, err := rootDevice(r)
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("root device %s (root=%s) did not appear within %s", dev, r, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// blockFilesystems lists the kernel's block-device file systems
// (/proc/filesystems without "nodev"), the candidates when root= has no
// rootfstype=.
func blockFilesystems() ([]string, error) {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 1 {
			out = append(out, fields[0])
		}
	}
	return out, sc.Err()
}

// isMountPoint reports whether dir is the root of a mount.
func isMountPoint(dir string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statx %s: %w", dir, err)
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("statx %s: the kernel does not report mount roots", dir)
	}
	return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// makeWritable turns the physical root's super block (and its mount)
// read-write, so that the /etc and /var binds made next are writable;
// makeReadOnly then makes the physical root's own mount read-only again
// (as ostree's sysroot.readonly). Only for a physical root cfs mounted.
func makeWritable(dir string) error {
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount %s read-write: %w", dir, err)
	}
	return nil
}

// makeReadOnly makes the mount at dir read-only, leaving its super block
// and the other mounts of it (the binds) writable.
func makeReadOnly(dir string) error {
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make the %s mount read-only: %w", dir, err)
	}
	return nil
}
