package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// apply mounts the steps of a plan in order. If a step fails, the steps
// already mounted are unmounted in reverse order and the error is
// returned: nothing of the plan stays mounted. When all steps are in
// place, the Detach steps are lazily unmounted (in reverse order).
func apply(ctx context.Context, plan []Step, log *slog.Logger) (err error) {
	var done []Step
	defer func() {
		if err == nil {
			return
		}
		for i := len(done) - 1; i >= 0; i-- {
			if uerr := unix.Unmount(done[i].Target, unix.MNT_DETACH); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo mount %s on %s: %w", done[i].Type, done[i].Target, uerr))
			}
		}
	}()
	for _, s := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		log.Debug("mount", "step", s.String())
		if err := applyStep(s, log); err != nil {
			return fmt.Errorf("mount %s on %s: %w", s.Type, s.Target, err)
		}
		done = append(done, s)
	}
	for i := len(plan) - 1; i >= 0; i-- {
		if !plan[i].Detach {
			continue
		}
		if err := unix.Unmount(plan[i].Target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach %s from %s: %w", plan[i].Type, plan[i].Target, err)
		}
		log.Debug("detached", "type", plan[i].Type, "dir", plan[i].Target)
	}
	return nil
}

// applyStep mounts one step: new mount API first, a loop device where the
// source file cannot be mounted directly, mount(2) where the filesystem
// lacks the new API or (overlay) a parameter it needs.
func applyStep(s Step, log *slog.Logger) error {
	err := newAPIMount(s)
	if s.LoopFallback && errors.Is(err, unix.ENOTBLK) {
		log.Debug("no file-backed mount here, using a loop device", "type", s.Type, "source", s.Source, "err", err)
		loop, lerr := attachLoop(s.Source)
		if lerr != nil {
			return fmt.Errorf("%w (file-backed mount: %v)", lerr, err)
		}
		// With AUTOCLEAR the device lets go of the image when the
		// last user goes: this descriptor now, the mount later.
		defer loop.Close()
		s.Source = loop.Name()
		err = newAPIMount(s)
	}
	if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
		return err
	}
	newErr := err
	for _, m := range legacyVariants(s) {
		log.Debug("new mount API failed, trying mount(2)", "type", s.Type, "data", m.Data, "err", err)
		flags := uintptr(0)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		err = unix.Mount(m.Source, m.Target, m.Type, flags, m.Data)
		if err == nil {
			return nil
		}
		err = fmt.Errorf("mount(2) -o %s: %w", m.Data, err)
		if !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	return fmt.Errorf("%w; new mount API: %w", err, newErr)
}

// newAPIMount is fsMount; tests replace it to take the fallback paths
// this kernel does not need.
var newAPIMount = fsMount

// fsMount mounts a step with fsopen/fsconfig/fsmount/move_mount.
func fsMount(s Step) error {
	fsfd, err := unix.Fsopen(s.Type, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", s.Source); err != nil {
		return fmt.Errorf("fsconfig source=%s: %w%s", s.Source, err, fsLog(fsfd))
	}
	for _, o := range s.Options {
		k, v, hasVal := strings.Cut(o, "=")
		if hasVal {
			err = unix.FsconfigSetString(fsfd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fsfd, k)
		}
		if err != nil {
			return fmt.Errorf("fsconfig %s: %w%s", o, err, fsLog(fsfd))
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("fsconfig create: %w%s", err, fsLog(fsfd))
	}
	attr := 0
	if s.ReadOnly {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("fsmount: %w%s", err, fsLog(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, s.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// fsLog drains the kernel's messages about a filesystem context (what
// fsconfig did not like), as ": msg; msg", or "".
func fsLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		// "e overlay: Unknown parameter 'x'": severity letter first
		m := strings.TrimSpace(string(buf[:n]))
		if len(m) > 2 && m[1] == ' ' {
			m = m[2:]
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(msgs, "; ") + ")"
}

// attachLoop binds the file at path to a free loop device: read-only,
// 4096-byte blocks, autoclear, direct I/O where the backing file allows.
// The caller closes the returned device once it is mounted.
func attachLoop(path string) (*os.File, error) {
	backing, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loop device: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device: %w", err)
	}
	defer ctl.Close()
	for range 16 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop device: LOOP_CTL_GET_FREE: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), os.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("loop device: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: 4096}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], path)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) {
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
			err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue // another user took that device first
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("loop device %s: LOOP_CONFIGURE: %w", dev.Name(), err)
		}
		return dev, nil
	}
	return nil, errors.New("loop device: no free device after 16 attempts")
}
