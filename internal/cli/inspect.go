package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/spf13/cobra"
)

func newDumpCmd() *cobra.Command {
	var ls bool
	cmd := &cobra.Command{
		Use:   "dump IMAGE",
		Short: "Print an image as a composefs-dump(5) file (as composefs-info dump)",
		Args:  exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := erofs.ReadFile(args[0])
			if err != nil {
				return err
			}
			if ls {
				return dump.WriteLs(cmd.OutOrStdout(), root)
			}
			return dump.Write(cmd.OutOrStdout(), root)
		},
	}
	cmd.Flags().BoolVar(&ls, "ls", false, "list paths as composefs-info ls does instead")
	return cmd
}

type objectsOptions struct {
	missing string
}

func newObjectsCmd() *cobra.Command {
	o := &objectsOptions{}
	cmd := &cobra.Command{
		Use:   "objects IMAGE",
		Short: "List the objects an image references (as composefs-info objects)",
		Long: "List the object paths an image references, sorted, one per line. With --missing DIR, list only\n" +
			"those absent from the object store DIR, and exit non-zero if there are any.",
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), cmd, args[0])
		},
	}
	cmd.Flags().StringVar(&o.missing, "missing", "", "list only objects absent from this object store directory")
	return cmd
}

func (o *objectsOptions) run(_ context.Context, cmd *cobra.Command, image string) error {
	objs, err := imageObjects(image)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	n := 0
	for _, obj := range objs {
		if o.missing != "" {
			if _, err := os.Lstat(filepath.Join(o.missing, obj)); err == nil {
				continue
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			n++
		}
		fmt.Fprintln(out, obj)
	}
	if n > 0 {
		return fmt.Errorf("%d of %d objects missing from %s", n, len(objs), o.missing)
	}
	return nil
}

func imageObjects(image string) ([]string, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return erofs.Objects(f, st.Size())
}

func newMeasureCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "measure-file FILE...",
		Short: "Print the fs-verity digest of files (kernel-measured if enabled, else computed)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range args {
				d, err := measureFile(cmd.Context(), p)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			return nil
		},
	}
}

func measureFile(ctx context.Context, path string) (fsverity.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return fsverity.Digest{}, err
	}
	defer f.Close()
	d, _, err := fsverity.MeasureOrCompute(ctx, f)
	if err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}
