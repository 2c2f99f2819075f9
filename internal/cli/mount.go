package cli

import (
	"fmt"

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
	o.opts.ReadOnly = o.upper == ""
	return nil
}
