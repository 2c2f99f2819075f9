package cli

import "github.com/spf13/cobra"

// NewCommitCmd returns the cfs-commit root command.
func NewCommitCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cfs-commit",
		Short: "Build and inspect composefs images and signed cfs commits",
		Long: "cfs-commit builds reproducible composefs images (byte-identical to upstream mkcomposefs 1.0.8),\n" +
			"fills content-addressed object stores, and inspects and mounts images.",
	}
	root.AddCommand(
		newImageCmd(),
		newDumpCmd(),
		newObjectsCmd(),
		newMountCmd(),
		newMeasureCmd(),
		newInitCmd(),
		newKeygenCmd(),
		newBuildCmd(),
		newLogCmd(),
		newShowCmd(),
		newDiffCmd(),
		newVerifyCmd(),
		newFsckCmd(), newPruneCmd(),
	)
	return root
}
