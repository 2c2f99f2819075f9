package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/tpm"
)

// TPMEnv names the environment variable that replaces the default of
// cfs-deploy's --tpm flag.
const TPMEnv = "CFS_TPM"

func addTPMFlag(f *pflag.FlagSet, g *deployGlobals) {
	def := os.Getenv(TPMEnv)
	if def == "" {
		def = tpm.DefaultDevice
	}
	f.StringVar(&g.tpm, "tpm", def, "the TPM: device:PATH or swtpm:HOST:PORT (default from $"+TPMEnv+")")
}

// openTPM opens the TPM named by --tpm. The CLI is the only place that
// opens a transport; library calls receive it.
func (g *deployGlobals) openTPM() (transport.TPMCloser, error) {
	return tpm.Open(g.tpm)
}

// tpmPreSwap is the PreSwap hook of every write command: when the sysroot
// is enrolled and its mode is not off, it seals the new default deployment
// before its boot entry is installed. In if-present mode a TPM that is not
// reachable is skipped with a warning on stderr; in required mode it
// refuses the switch (which then changes nothing).
func (g *deployGlobals) tpmPreSwap(cmd *cobra.Command) func(context.Context, *deploy.PreSwap) error {
	return func(ctx context.Context, p *deploy.PreSwap) error {
		ts, err := deploy.LoadTPM(g.sysroot)
		if err != nil {
			return err
		}
		if !ts.Sealing() {
			return nil
		}
		t, err := g.openTPM()
		if err != nil {
			if errors.Is(err, tpm.ErrNoTPM) && ts.Config.Mode == cmdline.TPMIfPresent {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: TPM mode if-present and no TPM reachable (%v): %s is NOT sealed; its boot will verify signatures only\n",
					cmd.Root().Name(), err, p.Deployment.Path())
				return nil
			}
			return fmt.Errorf("TPM mode %s: %w", ts.Config.Mode, err)
		}
		defer t.Close()
		return ts.PreSwapHook(t)(ctx, p)
	}
}

// tpmStatus builds the "tpm" object of status: the TPM is read when it is
// reachable; when it is not, the object says why.
func (g *deployGlobals) tpmStatus(cmd *cobra.Command, s *deploy.Sysroot) (*deploy.TPMStatus, error) {
	t, err := g.openTPM()
	if err != nil {
		return s.TPMStatus(cmd.Context(), nil, err)
	}
	defer t.Close()
	return s.TPMStatus(cmd.Context(), t, nil)
}

// withTPM opens the sysroot and the TPM for a tpm subcommand.
func (g *deployGlobals) withTPM(cmd *cobra.Command, f func(s *deploy.Sysroot, t transport.TPM) error) error {
	s, err := g.open(cmd)
	if err != nil {
		return err
	}
	t, err := g.openTPM()
	if err != nil {
		return err
	}
	defer t.Close()
	return f(s, t)
}

func newDeployTPMCmd(g *deployGlobals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tpm",
		Short: "Bind deployments to the TPM: enroll, check, reseal, bless, status",
		Long: "cfs-deploy tpm enrolls the machine's TPM, seals each deployment's image digest, commit and\n" +
			"rollback index (done by switch once enrolled), checks that the next boot will unseal, raises the\n" +
			"anti-rollback counter after a good boot, and reports the TPM state. See docs/security.md.",
		Args: exactArgs(0, "a subcommand"),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTPMEnrollCmd(g), newTPMCheckCmd(g), newTPMResealCmd(g), newTPMBlessCmd(g), newTPMStatusCmd(g))
	return cmd
}

func newTPMEnrollCmd(g *deployGlobals) *cobra.Command {
	var (
		mode, pcrs string
		measure    int
		asJSON     bool
		opts       deploy.TPMEnrollOptions
	)
	cmd := &cobra.Command{
		Use:   "enroll [--mode required|if-present|off] [--pcrs 7] [--measure-pcr 15] [--json]",
		Short: "Enroll the TPM (SRK, policy key, anti-rollback counter) and seal the bootable deployments",
		Args:  exactArgs(0, "no arguments"),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			m, err := cmdline.ParseTPM(mode)
			if err != nil {
				return usagef("--mode: want required, if-present or off, got %q", mode)
			}
			list, err := deploy.ParsePCRList(pcrs)
			if err != nil {
				return usagef("--pcrs: %v", err)
			}
			if measure < 1 || measure > 23 || measure == 11 || measure == 12 {
				return usagef("--measure-pcr: want 1-23 except 11 and 12, got %d", measure)
			}
			opts = deploy.TPMEnrollOptions{Mode: m, PCRs: list, MeasurePCR: measure}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTPM(cmd, func(s *deploy.Sysroot, t transport.TPM) error {
				res, err := s.EnrollTPM(cmd.Context(), t, opts)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), res)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "enrolled the TPM in %s: mode %s, PCRs %v, measure PCR %d\n", s.Path(), res.Mode, res.PCRs, res.MeasurePCR)
				for _, d := range res.Sealed {
					fmt.Fprintf(w, "    sealed %s\n", d)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", string(cmdline.TPMRequired), "required, if-present or off")
	f.StringVar(&pcrs, "pcrs", strconv.Itoa(tpm.DefaultPCR), "PCRs bound literally by the signed policy (comma-separated)")
	f.IntVar(&measure, "measure-pcr", tpm.DefaultMeasurePCR, "PCR the booted root is measured into (the latch)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newTPMCheckCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	index := -1
	cmd := &cobra.Command{
		Use:   "check [--json] [INDEX]",
		Short: "Run every unseal check of the initramfs for a deployment (default: the default one)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one INDEX, got %d arguments", cmd.CommandPath(), len(args))
			}
			if len(args) == 1 {
				n, err := strconv.Atoi(args[0])
				if err != nil || n < 0 {
					return usagef("INDEX must be a deployment index from status, got %q", args[0])
				}
				index = n
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTPM(cmd, func(s *deploy.Sysroot, t transport.TPM) error {
				res, err := s.CheckTPM(cmd.Context(), t, index)
				if err != nil {
					return err
				}
				if asJSON {
					if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%d: %s: %s\n", res.Index, res.Deployment, res.Message)
				}
				if !res.WillUnseal {
					return &deploy.VerificationError{What: "tpm check of " + res.Deployment, Err: res.Err}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newTPMResealCmd(g *deployGlobals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reseal",
		Short: "Re-seal every bootable deployment from the current PCR state (after verifying it)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTPM(cmd, func(s *deploy.Sysroot, t transport.TPM) error {
				sealed, err := s.ResealTPM(cmd.Context(), t)
				for _, d := range sealed {
					fmt.Fprintf(cmd.OutOrStdout(), "sealed %s\n", d)
				}
				return err
			})
		},
	}
	return cmd
}

func newTPMBlessCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bless [--json]",
		Short: "Raise the anti-rollback counter to the booted deployment's rollback index",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withTPM(cmd, func(s *deploy.Sysroot, t transport.TPM) error {
				res, err := s.BlessTPM(cmd.Context(), t)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "anti-rollback counter at %d (%s, rollback index %d)\n", res.Counter, res.Deployment, res.RollbackIndex)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newTPMStatusCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the TPM mode, enrollment, counter, measured PCR and sealed deployments",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			st, err := g.tpmStatus(cmd, s)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Mode: %s\nEnrolled: %v\n", st.Mode, st.Enrolled)
			if st.Enrolled {
				fmt.Fprintf(w, "PCRs: %v, measure PCR %d\n", st.PCRs, st.MeasurePCR)
			}
			switch {
			case st.Reachable:
				fmt.Fprintf(w, "PCR %d: %s\n", st.MeasurePCR, st.MeasuredPCRValue)
				if st.Counter != nil {
					fmt.Fprintf(w, "Anti-rollback counter: %d\n", *st.Counter)
				}
			default:
				fmt.Fprintf(w, "TPM: not reachable\n")
			}
			if st.Error != "" {
				fmt.Fprintf(w, "Error: %s\n", st.Error)
			}
			if st.BootedDigest != "" {
				fmt.Fprintf(w, "Booted image: %s\n", st.BootedDigest)
			}
			if len(st.Sealed) > 0 {
				fmt.Fprintf(w, "Sealed: %s\n", strings.Join(st.Sealed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}
