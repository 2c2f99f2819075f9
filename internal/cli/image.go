package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/progress"
	"github.com/spf13/cobra"
)

// imageOptions are mkcomposefs's options, with its names and meanings.
type imageOptions struct {
	fromFile        bool
	digestStore     string
	printDigest     bool
	printDigestOnly bool
	useEpoch        bool
	skipXattrs      bool
	userXattrs      bool
	skipDevices     bool
	minVersion      int
	maxVersion      int
	threads         int
}

func (o *imageOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.fromFile, "from-file", false, "SOURCE is a composefs-dump(5) file (\"-\" for stdin), not a directory")
	f.StringVar(&o.digestStore, "digest-store", "", "copy regular files into this object store, named by fs-verity digest")
	f.BoolVar(&o.printDigest, "print-digest", false, "print the fs-verity digest of the image")
	f.BoolVar(&o.printDigestOnly, "print-digest-only", false, "print the fs-verity digest of the image and write no image (no IMAGE argument)")
	f.BoolVar(&o.useEpoch, "use-epoch", false, "make every mtime zero")
	f.BoolVar(&o.skipXattrs, "skip-xattrs", false, "store no xattrs")
	f.BoolVar(&o.userXattrs, "user-xattrs", false, "store only user.* xattrs")
	f.BoolVar(&o.skipDevices, "skip-devices", false, "leave out character and block devices (whiteouts too)")
	f.IntVar(&o.minVersion, "min-version", 0, "lowest composefs format version to write (0 or 1)")
	f.IntVar(&o.maxVersion, "max-version", 1, "highest composefs format version to write (raised to 1 only for whiteouts)")
	f.IntVar(&o.threads, "threads", runtime.NumCPU(), "number of threads hashing and copying files")
}

func (o *imageOptions) validate(cmd *cobra.Command, args []string) error {
	want := 2
	if o.printDigestOnly {
		want = 1
	}
	if len(args) != want {
		if o.printDigestOnly {
			return usagef("with --print-digest-only, give SOURCE only (got %d arguments)", len(args))
		}
		return usagef("give SOURCE and IMAGE (got %d arguments)", len(args))
	}
	if o.skipXattrs && o.userXattrs {
		return usagef("--skip-xattrs and --user-xattrs cannot be used together")
	}
	// As mkcomposefs: if only one of the version options is given, the
	// other defaults to 0.
	minSet, maxSet := cmd.Flags().Changed("min-version"), cmd.Flags().Changed("max-version")
	if minSet != maxSet {
		if minSet {
			o.maxVersion = 0
		} else {
			o.minVersion = 0
		}
	}
	if o.minVersion < 0 || o.minVersion > erofs.MaxFormatVersion || o.maxVersion < 0 || o.maxVersion > erofs.MaxFormatVersion {
		return usagef("format versions must be between 0 and %d", erofs.MaxFormatVersion)
	}
	if o.threads < 1 {
		return usagef("--threads must be at least 1")
	}
	if o.fromFile && o.digestStore != "" {
		return usagef("--digest-store needs a directory SOURCE, not --from-file")
	}
	if o.fromFile && (o.useEpoch || o.skipXattrs || o.userXattrs || o.skipDevices) {
		// mkcomposefs applies these only when scanning a directory; a
		// dump is written as it is.
		fmt.Fprintln(cmd.ErrOrStderr(), "cfs-commit image: warning: --use-epoch, --skip-xattrs, --user-xattrs and --skip-devices have no effect with --from-file (as in mkcomposefs)")
	}
	if !o.printDigestOnly && args[1] == "-" && progress.IsTerminal(os.Stdout) {
		return usagef("stdout is a terminal: refusing to write a binary image to it")
	}
	return nil
}

func newImageCmd() *cobra.Command {
	o := &imageOptions{}
	cmd := &cobra.Command{
		Use:   "image [OPTIONS] SOURCE IMAGE",
		Short: "Write a composefs image of a directory or dump file (mkcomposefs compatible)",
		Long: "Write a composefs EROFS image of SOURCE (a directory, or with --from-file a composefs-dump(5) file)\n" +
			"to IMAGE (\"-\" for stdout), byte-identical to upstream mkcomposefs 1.0.8 with the same options.",
		PreRunE: o.validate,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), cmd, args)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func (o *imageOptions) run(ctx context.Context, cmd *cobra.Command, args []string) error {
	root, err := o.loadTree(ctx, cmd, args[0])
	if err != nil {
		return err
	}
	wopts := erofs.WriteOptions{MinVersion: o.minVersion, MaxVersion: o.maxVersion}
	var digest fsverity.Digest
	switch {
	case o.printDigestOnly:
		digest, err = erofs.Write(io.Discard, root, wopts)
	case args[1] == "-":
		digest, err = erofs.Write(cmd.OutOrStdout(), root, wopts)
	default:
		digest, err = writeImageFile(args[1], root, wopts)
	}
	if err != nil {
		return err
	}
	if o.printDigest || o.printDigestOnly {
		fmt.Fprintln(cmd.OutOrStdout(), digest)
	}
	return nil
}

func (o *imageOptions) loadTree(ctx context.Context, cmd *cobra.Command, source string) (*composefs.Node, error) {
	if o.fromFile {
		in, err := openInput(cmd, source)
		if err != nil {
			return nil, err
		}
		defer in.Close()
		root, err := dump.Parse(in, dump.ParseOptions{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		return root, nil
	}
	st, err := os.Stat(source)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, usagef("%s is not a directory (use --from-file for a dump file)", source)
	}
	bopts := composefs.BuildOptions{
		UseEpoch:    o.useEpoch,
		SkipXattrs:  o.skipXattrs,
		UserXattrs:  o.userXattrs,
		SkipDevices: o.skipDevices,
		Threads:     o.threads,
	}
	if o.digestStore != "" {
		store, err := objstore.Open(o.digestStore)
		if err != nil {
			return nil, err
		}
		bopts.Store = store
	}
	bar := progress.New(os.Stderr, "scanning "+source)
	defer bar.Done()
	if bar != nil {
		bopts.Progress = func(p composefs.BuildProgress) { bar.Update(p.Files, p.Bytes) }
	}
	return composefs.BuildFromDir(ctx, source, bopts)
}

func writeImageFile(path string, root *composefs.Node, opts erofs.WriteOptions) (fsverity.Digest, error) {
	f, err := atomicfile.New(path, 0o644)
	if err != nil {
		return fsverity.Digest{}, err
	}
	defer f.Abort()
	d, err := erofs.Write(f, root, opts)
	if err != nil {
		return fsverity.Digest{}, fmt.Errorf("write image %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fsverity.Digest{}, err
	}
	return d, nil
}
