package mount

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"golang.org/x/sys/unix"
)

// Mount mounts the composefs image at target. Nothing stays mounted when
// it fails.
func Mount(ctx context.Context, image, target string, opts Options) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(image, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("mount: open image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("mount: %s is not a regular file", image)
	}

	// 1. The image's own digest, from this very file descriptor.
	if opts.ExpectedDigest != nil {
		got, kernel, err := fsverity.MeasureOrCompute(ctx, f)
		if err != nil {
			return fmt.Errorf("mount: digest of %s: %w", image, err)
		}
		if subtle.ConstantTimeCompare(got[:], opts.ExpectedDigest[:]) != 1 {
			return &DigestMismatchError{What: "image " + image, Expected: *opts.ExpectedDigest, Found: got}
		}
		log.Debug("image digest checked", "digest", got, "kernel", kernel)
	}

	// 2. Header.
	var hdr [erofs.ComposefsHeaderSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("mount: %s: %w: %v", image, ErrNotComposefs, err)
	}
	if binary.LittleEndian.Uint32(hdr[0:]) != erofs.ComposefsMagic || binary.LittleEndian.Uint32(hdr[4:]) != erofs.ComposefsVersion {
		return fmt.Errorf("mount: %s: %w (bad magic or version)", image, ErrNotComposefs)
	}
	hasACL := binary.LittleEndian.Uint32(hdr[8:])&erofs.FlagHasACL != 0

	// 3. Object verification policy.
	switch opts.Verify {
	case VerifyKernel:
		if err := probeKernelVerity(f, st.Size(), opts.BaseDirs); err != nil {
			return err
		}
	case VerifyObjects:
		if err := VerifyObjectsOf(ctx, f, st.Size(), opts.BaseDirs); err != nil {
			return err
		}
	case VerifyNone:
		log.Warn("mounting without object verification", "image", image)
	}

	// 4. EROFS, private, then overlay on target.
	tmp := opts.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	}
	meta, err := os.MkdirTemp(tmp, ".composefs.")
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer os.Remove(meta)
	if err := mountErofs(f, meta, hasACL, log); err != nil {
		return err
	}
	// The overlay keeps the EROFS mount alive; our path to it goes.
	defer unix.Unmount(meta, unix.MNT_DETACH)
	return mountOverlay(meta, target, opts, opts.Verify == VerifyKernel, log)
}

// Unmount unmounts a composefs mount.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// probeKernelVerity refuses VerifyKernel where it cannot be enforced: it
// measures one referenced object; no fs-verity support, or an object
// without fs-verity, means every read would fail (or, worse, a kernel
// without the overlay verity option would not check at all).
func probeKernelVerity(f *os.File, size int64, basedirs []string) error {
	objs, err := erofs.Objects(f, size)
	if err != nil {
		return fmt.Errorf("mount: list objects: %w", err)
	}
	if len(objs) == 0 {
		return nil
	}
	p, err := findObject(basedirs, objs[0])
	if err != nil {
		return &ObjectError{Object: objs[0], Err: err}
	}
	of, err := os.Open(p)
	if err != nil {
		return &ObjectError{Object: objs[0], Err: err}
	}
	defer of.Close()
	_, err = fsverity.Measure(of)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fsverity.ErrNotSupported):
		return fmt.Errorf("mount: %w on the filesystem of %s (%v); use verify=objects to check every object in user space before mounting, or verify=none to mount unverified", ErrVerityUnsupported, filepath.Dir(filepath.Dir(p)), err)
	case errors.Is(err, fsverity.ErrNotEnabled):
		return fmt.Errorf("mount: %w: object %s has no fs-verity enabled (enable it, e.g. cfs-commit objects or fsverity enable, or use verify=objects)", ErrVerityUnsupported, p)
	}
	return fmt.Errorf("mount: measure %s: %w", p, err)
}

func findObject(basedirs []string, obj string) (string, error) {
	for _, d := range basedirs {
		p := filepath.Join(d, obj)
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %v: %w", basedirs, fs.ErrNotExist)
}

// VerifyObjectsOf checks, in parallel, that every object the image
// references exists in one of basedirs and has the digest of its name
// (kernel-measured where the object has fs-verity, else computed).
func VerifyObjectsOf(ctx context.Context, f *os.File, size int64, basedirs []string) error {
	objs, err := erofs.Objects(f, size)
	if err != nil {
		return fmt.Errorf("mount: list objects: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for obj := range work {
				if err := verifyObject(ctx, basedirs, obj); err != nil {
					fail(err)
				}
			}
		}()
	}
feed:
	for _, obj := range objs {
		select {
		case work <- obj:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func verifyObject(ctx context.Context, basedirs []string, obj string) error {
	want, err := fsverity.ParseObjectPath(obj)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	p, err := findObject(basedirs, obj)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	of, err := os.Open(p)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	defer of.Close()
	got, _, err := fsverity.MeasureOrCompute(ctx, of)
	if err != nil {
		return &ObjectError{Object: obj, Err: err}
	}
	if got != want {
		return &ObjectError{Object: obj, Err: &DigestMismatchError{What: p, Expected: want, Found: got}}
	}
	return nil
}

// mountErofs mounts the image (by its open descriptor) read-only at dir,
// directly from the file where the kernel can (file-backed EROFS), else
// through a loop device.
func mountErofs(f *os.File, dir string, hasACL bool, log *slog.Logger) error {
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	err := newAPIMount("erofs", src, dir, hasACL)
	if errors.Is(err, unix.ENOTBLK) {
		log.Debug("file-backed EROFS unavailable here, using a loop device", "err", err)
		loop, lerr := attachLoop(f)
		if lerr != nil {
			return fmt.Errorf("mount erofs: %w (file-backed mount failed: %v)", lerr, err)
		}
		defer loop.Close() // AUTOCLEAR: the device goes away with the mount
		err = newAPIMount("erofs", loop.Name(), dir, hasACL)
	}
	if err != nil {
		return fmt.Errorf("mount erofs: %w", err)
	}
	return nil
}

func newAPIMount(fstype, source, dir string, hasACL bool) error {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
		return fmt.Errorf("fsconfig source=%s: %w", source, err)
	}
	if err := unix.FsconfigSetFlag(fsfd, "ro"); err != nil {
		return fmt.Errorf("fsconfig ro: %w", err)
	}
	if !hasACL {
		if err := unix.FsconfigSetFlag(fsfd, "noacl"); err != nil {
			return fmt.Errorf("fsconfig noacl: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("fsconfig create (source %s): %w", source, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", dir, err)
	}
	return nil
}

// attachLoop binds the image to a free loop device, read-only, 4096-byte
// blocks, autoclear.
func attachLoop(f *os.File) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device: %w", err)
	}
	defer ctl.Close()
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop device: LOOP_CTL_GET_FREE: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd()), Size: 4096}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) {
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
			err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue // raced with another user of that device
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("loop device %s: LOOP_CONFIGURE: %w", dev.Name(), err)
		}
		return dev, nil
	}
	return nil, errors.New("loop device: no free device after 16 attempts")
}

// mountOverlay mounts the read-only overlay: the EROFS mount as the lower
// layer and the object directories as data-only lower layers.
func mountOverlay(meta, target string, o Options, verity bool, log *slog.Logger) error {
	err := overlayNewAPI(meta, target, o, verity)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("mount overlay: %w", err)
	}
	log.Debug("overlay new mount API failed, trying mount(2)", "err", err)
	flags := uintptr(0)
	if !o.Writable {
		flags |= unix.MS_RDONLY
	}
	data := legacyOverlayData(meta, o, verity, true)
	lerr := unix.Mount("composefs", target, "overlay", flags, data)
	if errors.Is(lerr, unix.EINVAL) {
		lerr = unix.Mount("composefs", target, "overlay", flags, legacyOverlayData(meta, o, verity, false))
	}
	if lerr != nil {
		return fmt.Errorf("mount overlay on %s: %w (new API: %v)", target, lerr, err)
	}
	return nil
}

func overlayNewAPI(meta, target string, o Options, verity bool) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w", k, v, err)
		}
		return nil
	}
	params := [][2]string{{"source", "composefs"}, {"metacopy", "on"}, {"redirect_dir", "on"}}
	if verity {
		params = append(params, [2]string{"verity", "require"})
	}
	params = append(params, [2]string{"lowerdir+", meta})
	for _, d := range o.BaseDirs {
		params = append(params, [2]string{"datadir+", d})
	}
	if o.UpperDir != "" {
		params = append(params, [2]string{"upperdir", o.UpperDir}, [2]string{"workdir", o.WorkDir})
	}
	for _, p := range params {
		if err := set(p[0], p[1]); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("fsconfig create overlay: %w", err)
	}
	attr := 0
	if !o.Writable {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount overlay to %s: %w", target, err)
	}
	return nil
}
