package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/spf13/cobra"
)

type mountOptions struct {
	basedirs []string
	digest   string
	verify   string
	upper    string
	work     string
	opts     mount.Options
}

func newMountCmd() *cobra.Command {
	o := &mountOptions{}
	cmd := &cobra.Command{
		Use:   "mount IMAGE DIR --basedir OBJECTS",
		Short: "Mount a composefs image with its object store through the kernel",
		Long: "Mount IMAGE at DIR: EROFS from the image file, overlayfs on top with the object store as a\n" +
			"data-only lower layer. --verify=kernel (default) makes the kernel enforce every object's\n" +
			"fs-verity digest and refuses where the kernel or filesystem lacks fs-verity; --verify=objects\n" +
			"checks every referenced object in user space before mounting; --verify=none mounts unverified.\n" +
			"--digest checks the image's own fs-verity digest first.",
		Args: exactArgs(2, "IMAGE and DIR"),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return o.complete()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return mount.Mount(cmd.Context(), args[0], args[1], o.opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.basedirs, "basedir", nil, "object store directory (repeat for several)")
	f.StringVar(&o.digest, "digest", "", "expected fs-verity digest of the image (hex)")
	f.StringVar(&o.verify, "verify", "kernel", "object verification: kernel, objects or none")
	f.StringVar(&o.upper, "upperdir", "", "writable upper directory (with --workdir)")
	f.StringVar(&o.work, "workdir", "", "overlayfs work directory (with --upperdir)")
	return cmd
}

func (o *mountOptions) complete() error {
	if len(o.basedirs) == 0 {
		return usagef("--basedir is required")
	}
	o.opts.BaseDirs = o.basedirs
	mode, err := mount.ParseVerifyMode(o.verify)
	if err != nil {
		return usageError{err}
	}
	o.opts.Verify = mode
	if o.digest != "" {
		d, err := fsverity.ParseDigest(o.digest)
		if err != nil {
			return usageError{fmt.Errorf("--digest: %w", err)}
		}
		o.opts.ExpectedDigest = &d
	}
	if (o.upper == "") != (o.work == "") {
		return usagef("--upperdir and --workdir go together")
	}
	o.opts.UpperDir, o.opts.WorkDir = o.upper, o.work
	o.opts.Writable = o.upper != ""
	return nil
}

// MountHelper is mount(8)'s helper for `mount -t cfs IMAGE DIR -o OPTS`:
// argv is IMAGE DIR [-sfnv] [-o OPTIONS] [-t TYPE]. It returns the exit
// code.
func MountHelper(args []string) int {
	var pos []string
	var optstr string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			i++
			optstr = joinOpts(optstr, args[i])
		case strings.HasPrefix(a, "-o"):
			optstr = joinOpts(optstr, a[2:])
		case a == "-t" && i+1 < len(args):
			i++ // our own type; nothing to do
		case a == "-s" || a == "-f" || a == "-n" || a == "-v":
			// sloppy, fake, no-mtab, verbose: accepted as mount(8) passes them
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(os.Stderr, "mount.cfs: unknown flag %s\n", a)
			return ExitUsage
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mount.cfs IMAGE DIR -o basedir=OBJECTS[:OBJECTS...][,digest=HEX][,verify=kernel|objects|none][,upperdir=U,workdir=W][,ro|rw]")
		return ExitUsage
	}
	opts, err := mount.ParseOptions(optstr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mount.cfs: %v\n", err)
		return ExitUsage
	}
	if err := mount.Mount(context.Background(), pos[0], pos[1], opts); err != nil {
		fmt.Fprintf(os.Stderr, "mount.cfs: %v\n", err)
		return ExitCode(err)
	}
	return ExitOK
}

func joinOpts(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}
