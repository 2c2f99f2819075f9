// Package mount mounts composefs images through the kernel, as upstream
// mount.composefs does: the EROFS metadata image is mounted from the image
// file (a loop device where the kernel cannot mount a file directly), then
// overlayfs read-only on top with the object store as a data-only lower
// layer, metacopy and redirect_dir on, and verity=require so the kernel
// checks every object's fs-verity digest on open.
//
// Verification is on by default and fails closed: where the kernel or the
// object store's filesystem has no fs-verity, VerifyKernel refuses to mount.
// VerifyObjects checks every referenced object in user space before the
// mount instead; VerifyNone is an explicit, named unverified mount.
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
	// tampering before the mount, not after.
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
	case "kernel", "require", "":
		return VerifyKernel, nil
	case "objects":
		return VerifyObjects, nil
	case "none":
		return VerifyNone, nil
	}
	return 0, fmt.Errorf("verify mode %q: want kernel, objects or none", s)
}

// Options configures Mount.
type Options struct {
	// BaseDirs are the object store directories (data-only lower layers),
	// searched in order. At least one.
	BaseDirs []string
	// ExpectedDigest, if set, is the fs-verity digest the image file must
	// have; checked before anything is mounted, and the checked open file
	// is the one mounted.
	ExpectedDigest *fsverity.Digest
	// Verify selects object verification (default VerifyKernel).
	Verify VerifyMode
	// UpperDir and WorkDir make the overlay writable (both or neither).
	UpperDir, WorkDir string
	// Writable mounts read-write (only meaningful with UpperDir).
	Writable bool
	// TempDir holds the private EROFS mount point (default os.TempDir()).
	TempDir string
	// Logger receives debug records; nil discards.
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
// verity (= verify=kernel), upperdir=, workdir=, ro, rw. A backslash
// escapes the next character (so ',' and ':' can appear in paths), as in
// mount.composefs. Unknown options are errors.
func ParseOptions(s string) (Options, error) {
	var o Options
	for _, opt := range splitEscaped(s, ',') {
		if opt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch key {
		case "basedir":
			for _, d := range splitEscaped(val, ':') {
				o.BaseDirs = append(o.BaseDirs, unescape(d))
			}
		case "digest":
			d, err := fsverity.ParseDigest(unescape(val))
			if err != nil {
				return o, fmt.Errorf("option digest: %w", err)
			}
			o.ExpectedDigest = &d
		case "verify":
			m, err := ParseVerifyMode(unescape(val))
			if err != nil {
				return o, err
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
			return o, fmt.Errorf("unknown mount option %q", key)
		}
		if !hasVal && (key == "basedir" || key == "digest" || key == "verify" || key == "upperdir" || key == "workdir") {
			return o, fmt.Errorf("mount option %s needs a value", key)
		}
	}
	if len(o.BaseDirs) == 0 {
		return o, errors.New("mount option basedir is required")
	}
	// mount(8) passes "rw" unless told "ro"; without an upper directory
	// an overlay of a composefs image can only be read-only.
	if o.UpperDir == "" {
		o.Writable = false
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

// legacyOverlayData is the option string of the legacy mount(2) fallback:
// lowerdir=META::BASE1::BASE2 (data-only layers), with ',' and ':' in
// paths escaped by a backslash.
func legacyOverlayData(meta string, o Options, verity bool, dataOnly bool) string {
	esc := func(p string) string {
		r := strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`)
		return r.Replace(p)
	}
	sep := "::"
	if !dataOnly {
		sep = ":"
	}
	var b strings.Builder
	b.WriteString("metacopy=on,redirect_dir=on,lowerdir=")
	b.WriteString(esc(meta))
	for _, d := range o.BaseDirs {
		b.WriteString(sep)
		b.WriteString(esc(d))
	}
	if o.UpperDir != "" {
		b.WriteString(",upperdir=" + esc(o.UpperDir) + ",workdir=" + esc(o.WorkDir))
	}
	if verity {
		b.WriteString(",verity=require")
	}
	return b.String()
}
