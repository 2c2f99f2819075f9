package mount

import (
	"fmt"
	"slices"
	"strings"
)

// A Step is one mount of a plan, as data: the executor creates a
// filesystem of Type from Source with Options (fsopen + fsconfig), mounts
// it (fsmount) and moves it to Target (move_mount), falling back to
// mount(2) on kernels without the new API. A failed plan is unwound in
// reverse order, so nothing stays mounted.
type Step struct {
	// Type is the filesystem type ("erofs", "overlay").
	Type string
	// Source is the "source" parameter: a file or block device for
	// EROFS, a free-form label for overlayfs.
	Source string
	// Target is the directory the mount is attached to.
	Target string
	// Options are the filesystem parameters in order, as fsconfig takes
	// them: "key=value" sets a string, "key" alone sets a flag.
	Options []string
	// ReadOnly makes the mount read-only (MOUNT_ATTR_RDONLY, MS_RDONLY).
	ReadOnly bool
	// LoopFallback: where the kernel cannot mount Source, a regular file,
	// directly (ENOTBLK: no file-backed mounts for it), attach it to a
	// read-only autoclear loop device and mount that instead.
	LoopFallback bool
	// Detach: once the whole plan is in place, this mount is lazily
	// unmounted (MNT_DETACH) from Target; a later step keeps it alive.
	Detach bool
}

// String renders the step like mount(8) arguments, for logs and errors.
func (s Step) String() string {
	opts := s.Options
	if s.ReadOnly && !slices.Contains(opts, "ro") {
		opts = append([]string{"ro"}, opts...)
	}
	return fmt.Sprintf("-t %s -o %s %s %s", s.Type, strings.Join(opts, ","), s.Source, s.Target)
}

// PlanInput is what Plan needs to know about an image and where things go.
type PlanInput struct {
	// ImageSource is the EROFS source: normally /proc/self/fd/N of the
	// open (and checked) image file.
	ImageSource string
	// HasACL is the image header's HAS_ACL flag; without it EROFS is
	// mounted with noacl, as upstream does.
	HasACL bool
	// MetaDir is an empty private directory for the EROFS mount.
	MetaDir string
	// Target is the final mount point.
	Target string
}

// Plan returns the mounts that put a composefs image at in.Target: the
// EROFS metadata image read-only at in.MetaDir (detached once the overlay
// holds it), then overlayfs with the EROFS as its lower layer and
// opts.BaseDirs as data-only lower layers, metacopy and redirect_dir on,
// verity=require for VerifyKernel, upper and work directories if given.
// It only computes; it does not look at the filesystem.
func Plan(in PlanInput, opts Options) []Step {
	erofs := Step{
		Type:         "erofs",
		Source:       in.ImageSource,
		Target:       in.MetaDir,
		Options:      []string{"ro"},
		ReadOnly:     true,
		LoopFallback: true,
		Detach:       true,
	}
	if !in.HasACL {
		erofs.Options = append(erofs.Options, "noacl")
	}
	ovl := Step{
		Type:     "overlay",
		Source:   "composefs",
		Target:   in.Target,
		Options:  []string{"metacopy=on", "redirect_dir=on"},
		ReadOnly: !opts.Writable,
	}
	if opts.Verify == VerifyKernel {
		ovl.Options = append(ovl.Options, "verity=require")
	}
	ovl.Options = append(ovl.Options, "lowerdir+="+in.MetaDir)
	for _, d := range opts.BaseDirs {
		ovl.Options = append(ovl.Options, "datadir+="+d)
	}
	if opts.UpperDir != "" {
		// overlayfs removes one level of '\' from upperdir and workdir
		// even when they come through fsconfig (not lowerdir+/datadir+).
		ovl.Options = append(ovl.Options,
			"upperdir="+escapeBackslash(opts.UpperDir), "workdir="+escapeBackslash(opts.WorkDir))
	}
	return []Step{erofs, ovl}
}

// legacyMount is a mount(2) call: the fallback for kernels whose
// filesystem lacks (part of) the new mount API.
type legacyMount struct {
	Source, Target, Type string
	ReadOnly             bool
	Data                 string
}

// legacyVariants translates a step into the mount(2) calls to try, in
// order. Flags and "key=value" options become the comma-separated data
// string (",", ":" and "\" in overlay paths escaped with a backslash);
// overlay's lowerdir+/datadir+ become lowerdir=LOWER::DATA1::DATA2
// (data-only layers, kernel ≥ 6.5), then, for older kernels, the same
// with ":" (plain lower layers; the image's root whiteout stubs hide the
// object store's fan-out directories).
func legacyVariants(s Step) []legacyMount {
	overlay := s.Type == "overlay"
	var lowers, datas []string
	for _, o := range s.Options {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case overlay && k == "lowerdir+":
			lowers = append(lowers, escapeOverlayPath(v))
		case overlay && k == "datadir+":
			datas = append(datas, escapeOverlayPath(v))
		}
	}
	seps := []string{""}
	if len(lowers) > 0 && len(datas) > 0 {
		seps = []string{"::", ":"}
	}
	var out []legacyMount
	for _, sep := range seps {
		m := legacyMount{Source: s.Source, Target: s.Target, Type: s.Type, ReadOnly: s.ReadOnly}
		var data []string
		placed := false
		for _, o := range s.Options {
			k, v, hasVal := strings.Cut(o, "=")
			switch {
			case overlay && (k == "lowerdir+" || k == "datadir+"):
				if !placed {
					lower := strings.Join(lowers, ":")
					if len(datas) > 0 {
						lower += sep + strings.Join(datas, sep)
					}
					data = append(data, "lowerdir="+lower)
					placed = true
				}
			case overlay && hasVal && (k == "upperdir" || k == "workdir"):
				// '\' is escaped already (see Plan)
				data = append(data, k+"="+strings.ReplaceAll(v, ",", `\,`))
			case !hasVal && k == "ro":
				m.ReadOnly = true
			default:
				data = append(data, o)
			}
		}
		m.Data = strings.Join(data, ",")
		out = append(out, m)
	}
	return out
}

// escapeOverlayPath escapes a directory for overlayfs' legacy option
// string, which splits options at unescaped ',' and layers at ':' and
// removes one level of '\'.
func escapeOverlayPath(p string) string {
	return overlayEscaper.Replace(p)
}

var overlayEscaper = strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`)

func escapeBackslash(p string) string { return strings.ReplaceAll(p, `\`, `\\`) }
