package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cfs-dev/cfs/initramfs"
	"github.com/cfs-dev/cfs/tpm"
)

// RunInitramfs executes cfs-initramfs and returns its exit code. A
// refused boot check exits with ExitVerify; its message (on stderr, which
// the initrd unit sends to the console) names the check, the expected and
// actual values and the deployment.
func RunInitramfs(root *cobra.Command) int {
	err := executeDeploy(root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: %v\n", root.Name(), err)
	}
	if errors.Is(err, initramfs.ErrCheck) {
		return ExitVerify
	}
	return ExitCode(err)
}

type initramfsGlobals struct {
	runDir  string
	tpm     string
	json    bool
	verbose bool
}

func (g *initramfsGlobals) add(f *pflag.FlagSet) {
	f.StringVar(&g.runDir, "run-dir", initramfs.DefaultRunDir, "the run directory (the boot record is <run-dir>/cfs/booted.json)")
	def := os.Getenv(TPMEnv)
	if def == "" {
		def = tpm.DefaultDevice
	}
	f.StringVar(&g.tpm, "tpm", def, "the TPM: device:PATH or swtpm:HOST:PORT (default from $"+TPMEnv+")")
	f.BoolVar(&g.json, "json", false, "print the result as JSON")
	f.BoolVarP(&g.verbose, "verbose", "v", false, "log every step")
}

func (g *initramfsGlobals) openTPM() (transport.TPMCloser, error) { return tpm.Open(g.tpm) }

func (g *initramfsGlobals) logger(cmd *cobra.Command) *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // the journal stamps records
			}
			return a
		}}))
}

// NewInitramfsCmd is the cfs-initramfs root command.
func NewInitramfsCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cfs-initramfs",
		Short: "Verify and mount the cfs root early in boot",
		Long: "cfs-initramfs runs in the initramfs (cfs-mount-root.service): it verifies the deployment named on\n" +
			"the kernel command line (signature, digest, TPM) and mounts its composefs root at /sysroot.\n" +
			"See docs/initramfs.md.",
	}
	root.AddCommand(newMountRootCmd(), newInitramfsMeasureCmd(), newInitramfsBlessCmd(), newInitramfsStatusCmd())
	return root
}

func newMountRootCmd() *cobra.Command {
	var g initramfsGlobals
	var o struct {
		cmdline, physical, sysroot, keys, config string
	}
	cmd := &cobra.Command{
		Use:   "mount-root",
		Short: "Verify the deployment on the kernel command line and mount its root at the sysroot",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			line := o.cmdline
			if !cmd.Flags().Changed("cmdline") {
				b, err := os.ReadFile("/proc/cmdline")
				if err != nil {
					return err
				}
				line = strings.TrimSpace(string(b))
			}
			for _, p := range []*string{&o.physical, &o.sysroot, &g.runDir} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			cfg, err := initramfs.LoadConfig(o.config)
			if err != nil {
				return &initramfs.CheckError{Check: initramfs.CheckConfig, Err: err}
			}
			rec, err := initramfs.MountRoot(cmd.Context(), initramfs.Options{
				Cmdline:      line,
				PhysicalRoot: o.physical,
				Sysroot:      o.sysroot,
				RunDir:       g.runDir,
				KeysDir:      o.keys,
				Config:       cfg,
				OpenTPM:      g.openTPM,
				Logger:       g.logger(cmd),
			})
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), rec)
			}
			printRecord(cmd, rec)
			return nil
		},
	}
	f := cmd.Flags()
	g.add(f)
	f.StringVar(&o.cmdline, "cmdline", "", "the kernel command line (default /proc/cmdline)")
	f.StringVar(&o.physical, "physical-root", "", "the physical root, already mounted (default: root=, mounted under <run-dir>/cfs/physical)")
	f.StringVar(&o.sysroot, "sysroot", initramfs.DefaultSysroot, "where the root is mounted")
	f.StringVar(&o.keys, "keys", initramfs.DefaultKeysDir, "directory with trusted.d/, revoked.d/ and tpm/enrollment.json")
	f.StringVar(&o.config, "config", initramfs.DefaultConfigFile, "the initramfs configuration (verity, tpm, threshold)")
	return cmd
}

func printRecord(cmd *cobra.Command, rec *initramfs.Record) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "booted %s\n", rec.Deployment)
	fmt.Fprintf(w, "  commit:        %s\n", rec.Commit)
	fmt.Fprintf(w, "  image digest:  %s\n", rec.ImageDigest)
	if rec.Version != "" {
		fmt.Fprintf(w, "  version:       %s\n", rec.Version)
	}
	fmt.Fprintf(w, "  signed by:     %s\n", strings.Join(rec.KeyIDs, ", "))
	fmt.Fprintf(w, "  verity:        %s\n", rec.Verity)
	tpmLine := "mode " + rec.TPM.Mode
	switch {
	case rec.TPM.Unsealed:
		tpmLine += ", digest unsealed"
	case rec.TPM.Present:
		tpmLine += ", present"
	default:
		tpmLine += ", absent"
	}
	if rec.TPM.Measured {
		tpmLine += fmt.Sprintf(", measured into PCR %d", rec.TPM.MeasurePCR)
	}
	if rec.TPM.Blessed {
		tpmLine += ", blessed"
	}
	fmt.Fprintf(w, "  tpm:           %s\n", tpmLine)
	if rec.TPM.Note != "" {
		fmt.Fprintf(w, "  note:          %s\n", rec.TPM.Note)
	}
}

func newInitramfsMeasureCmd() *cobra.Command {
	var g initramfsGlobals
	cmd := &cobra.Command{
		Use:   "measure",
		Short: "Extend the measure PCR with the booted root, unless mount-root did",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := g.openTPM()
			if err != nil {
				return err
			}
			defer t.Close()
			rec, err := initramfs.Measure(cmd.Context(), g.runDir, t)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), rec)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "measured into PCR %d: %s\n", rec.TPM.MeasurePCR, rec.TPM.Event)
			return nil
		},
	}
	g.add(cmd.Flags())
	return cmd
}

func newInitramfsBlessCmd() *cobra.Command {
	var g initramfsGlobals
	cmd := &cobra.Command{
		Use:   "bless",
		Short: "Raise the TPM anti-rollback counter to the booted commit's rollback index (after a good boot)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := initramfs.Bless(cmd.Context(), g.runDir, g.openTPM)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			if res.Skipped != "" {
				fmt.Fprintf(w, "nothing to bless: %s\n", res.Skipped)
				return nil
			}
			fmt.Fprintf(w, "blessed %s: rollback index %d, counter %d -> %d\n", res.Deployment, res.RollbackIndex, res.Before, res.After)
			return nil
		},
	}
	g.add(cmd.Flags())
	return cmd
}

func newInitramfsStatusCmd() *cobra.Command {
	var g initramfsGlobals
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print what the initramfs verified and mounted in this boot",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			rec, err := initramfs.Status(g.runDir)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), rec)
			}
			printRecord(cmd, rec)
			return nil
		},
	}
	g.add(cmd.Flags())
	return cmd
}
