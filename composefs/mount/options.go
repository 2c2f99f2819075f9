// Package mount mounts composefs images through the kernel, as upstream
// mount.composefs does: the EROFS metadata image is mounted read-only from
// the image file (through a loop device where the kernel cannot mount a
// file directly) in a private temporary directory, then overlayfs on the
// target with that EROFS mount as its lower layer and the object store
// directories as data-only lower layers, metacopy and redirect_dir on, and
// verity=require so that the kernel checks every object's fs-verity digest
// on open; the EROFS mount is then detached (the overlay holds it).
//
// Verification is on by default and fails closed: where the kernel or the
// object store's filesystem has no fs-verity, VerifyKernel refuses to
// mount. VerifyObjects checks every referenced object in user space
// before mounting instead; VerifyNone is an explicit, named unverified
// mount. Options.ExpectedDigest checks the image itself, from the file
// descriptor that is then mounted.
//
// Mounts are data: Plan returns the steps, a small executor applies them
// (new mount API, falling back to mount(2) on older kernels) and unwinds
// them in reverse order when one fails.
package mount

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// VerifyMode says how object content is verified.
type VerifyMode int

const (
	// VerifyKernel: overlayfs verity=require; refuse where unavailable.
	VerifyKernel VerifyMode = iota
	// VerifyObjects: re-hash every referenced object in user space before
	// mounting (for machines without fs-verity); protects against
	// objects altered before the mount, not after (nothing checks reads).
	VerifyObjects
	// VerifyNone: no object verification at all.
	VerifyNone
)

func (m VerifyMode) String() string {
	switch m {
	case VerifyKernel:
		return "kernel"
	case VerifyObjects:
		return "objects"
	case VerifyNone:
		return "none"
	}
	return fmt.Sprintf("VerifyMode(%d)", int(m))
}

// ParseVerifyMode parses "kernel", "objects" or "none".
func ParseVerifyMode(s string) (VerifyMode, error) {
	switch s {
	case "kernel":
		return VerifyKernel, nil
	case "objects":
		return VerifyObjects, nil
	case "none":
		return VerifyNone, nil
	}
	return 0, fmt.Errorf("verify=%q: want kernel, objects or none", s)
}

// Options configures Mount.
type Options struct {
	// BaseDirs are the object store directories (data-only lower layers),
	// searched in order. At least one.
	BaseDirs []string
	// ExpectedDigest, if set, is the fs-verity digest the image file must
	// have; checked before anything is mounted (measured by the kernel if
	// the file has fs-verity, else computed), and the checked open file
	// is the one mounted. Without fs-verity on the image, the check
	// cannot stop a writer of the image file changing it afterwards.
	ExpectedDigest *fsverity.Digest
	// Verify selects object verification (default VerifyKernel).
	Verify VerifyMode
	// UpperDir and WorkDir make the overlay writable (both or neither).
	UpperDir, WorkDir string
	// Writable mounts read-write (needs UpperDir). The default is
	// read-only, so the zero value is the safe one.
	Writable bool
	// TempDir holds the private EROFS mount point (default os.TempDir()).
	TempDir string
	// Logger receives debug records of every step and a warning for
	// VerifyNone; nil discards.
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if len(o.BaseDirs) == 0 {
		return errors.New("mount: at least one object directory (basedir) is required")
	}
	for _, d := range o.BaseDirs {
		if d == "" {
			return errors.New("mount: empty basedir")
		}
	}
	if (o.UpperDir == "") != (o.WorkDir == "") {
		return errors.New("mount: upperdir and workdir go together")
	}
	if o.Writable && o.UpperDir == "" {
		return errors.New("mount: a writable mount needs upperdir and workdir")
	}
	switch o.Verify {
	case VerifyKernel, VerifyObjects, VerifyNone:
	default:
		return fmt.Errorf("mount: unknown verify mode %d", o.Verify)
	}
	return nil
}

// ParseOptions parses a mount(8) option string for mount.cfs:
// basedir=DIR[:DIR…] (required), digest=HEX, verify=kernel|objects|none,
// verity (= verify=kernel), upperdir=DIR, workdir=DIR, ro, rw. A
// backslash escapes the next character, as in mount.composefs, so ','
// can appear in any value and ':' in a basedir (upstream splits basedir
// after unescaping, so it cannot have ':'). Unknown options are errors,
// as upstream. "rw" without upperdir/workdir still mounts read-only (mount(8)
// passes "rw" by default; a composefs overlay without an upper directory
// cannot be written).
func ParseOptions(s string) (Options, error) {
	var o Options
	for _, opt := range splitEscaped(s, ',') {
		if opt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch key {
		case "basedir", "digest", "verify", "upperdir", "workdir":
			if !hasVal || val == "" {
				return Options{}, fmt.Errorf("mount option %s needs a value", key)
			}
		}
		switch key {
		case "basedir":
			for _, d := range splitEscaped(val, ':') {
				if d == "" {
					return Options{}, fmt.Errorf("mount option basedir=%s: empty directory", val)
				}
				o.BaseDirs = append(o.BaseDirs, unescape(d))
			}
		case "digest":
			d, err := fsverity.ParseDigest(unescape(val))
			if err != nil {
				return Options{}, fmt.Errorf("mount option digest: %w", err)
			}
			o.ExpectedDigest = &d
		case "verify":
			m, err := ParseVerifyMode(unescape(val))
			if err != nil {
				return Options{}, fmt.Errorf("mount option %w", err)
			}
			o.Verify = m
		case "verity":
			o.Verify = VerifyKernel
		case "upperdir":
			o.UpperDir = unescape(val)
		case "workdir":
			o.WorkDir = unescape(val)
		case "ro":
			o.Writable = false
		case "rw":
			o.Writable = true
		default:
			return Options{}, fmt.Errorf("unsupported mount option %q", unescape(key))
		}
	}
	if o.UpperDir == "" {
		o.Writable = false
	}
	if err := o.validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// splitEscaped splits on sep, not splitting where sep is escaped with a
// backslash; escapes are kept for unescape.
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
