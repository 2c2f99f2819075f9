package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/initramfs"
)

// CrashEnv names the test hook of cfs-deploy: when set to one of
// deploy.Steps, the process kills itself with SIGKILL right after that
// step, to test crash safety (see docs/deployments.md).
const CrashEnv = "CFS_TEST_CRASH_AT"

// NewDeployCmd returns the cfs-deploy root command.
func NewDeployCmd() *cobra.Command {
	g := &deployGlobals{}
	root := &cobra.Command{
		Use:   "cfs-deploy",
		Short: "Deploy signed cfs commits on a sysroot: switch, rollback, status, cleanup",
		Long: "cfs-deploy turns signed cfs commits into bootable deployments (composefs image, merged /etc,\n" +
			"kernel and initramfs, a Boot Loader Specification entry) and switches between them atomically.",
	}
	g.addFlags(root)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		g.resolveSysroot(cmd)
		return nil
	}
	root.AddCommand(
		newDeployInitCmd(g),
		newDeployPullCmd(g),
		newDeploySwitchCmd(g),
		newDeployUpgradeCmd(g),
		newDeployFinalizeCmd(g),
		newDeployRollbackCmd(g),
		newDeployStatusCmd(g),
		newDeployPinCmd(g, true),
		newDeployPinCmd(g, false),
		newDeployCleanupCmd(g),
		newDeployVerityCmd(g),
		newDeployTPMCmd(g),
	)
	return root
}

// RunDeploy is Run for cfs-deploy, whose exit codes add ExitVerify for
// every verification refusal (deploy.ErrVerification: signature, image,
// dump, object or boot file digest).
func RunDeploy(root *cobra.Command) int {
	err := executeDeploy(root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: %v\n", root.Name(), err)
	}
	return deployExitCode(err)
}

func executeDeploy(root *cobra.Command) error {
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	return root.ExecuteContext(context.Background())
}

// deployExitCode refines ExitCode for deploy errors.
func deployExitCode(err error) int {
	if errors.Is(err, deploy.ErrVerification) {
		return ExitVerify
	}
	return ExitCode(err)
}

type deployGlobals struct {
	sysroot string
	runDir  string
	cmdline string
	tpm     string // --tpm URI (deploy_tpm.go)
}

func (g *deployGlobals) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&g.sysroot, "sysroot", "/", "the physical root file system holding cfs/ and boot/ (on a system booted by cfs-initramfs: the physical root it recorded, /run/cfs/physical)")
	f.StringVar(&g.runDir, "run-dir", "", "the runtime directory holding cfs/booted.json (default /run on the booted system, <sysroot>/run otherwise)")
	_ = f.MarkHidden("run-dir")
	f.StringVar(&g.cmdline, "cmdline", "", "kernel command line to find the booted deployment in (testing; default /proc/cmdline)")
	_ = f.MarkHidden("cmdline")
	addTPMFlag(f, g)
}

// resolveSysroot finds the physical root of a system booted by
// cfs-initramfs: "/" is then the composefs root, and the physical root is
// where the boot record says it was mounted (/run/cfs/physical), with the
// run directory /run.
func (g *deployGlobals) resolveSysroot(cmd *cobra.Command) {
	if cmd.Flags().Changed("sysroot") || g.sysroot != "/" {
		return
	}
	if _, err := os.Stat("/" + deploy.ConfigFile); err == nil {
		return
	}
	rec, err := initramfs.ReadRecord(initramfs.DefaultRunDir)
	if err != nil || rec.PhysicalRoot == "" {
		return
	}
	g.sysroot = rec.PhysicalRoot
	if g.runDir == "" {
		g.runDir = initramfs.DefaultRunDir
	}
}

func (g *deployGlobals) open(cmd *cobra.Command) (*deploy.Sysroot, error) {
	opts := deploy.OpenOptions{RunDir: g.runDir}
	if cmd.Flags().Changed("cmdline") {
		line := g.cmdline
		opts.Cmdline = &line
	}
	if at := os.Getenv(CrashEnv); at != "" {
		opts.Hooks.Step = func(step string) error {
			if step == at {
				_ = unix.Kill(os.Getpid(), unix.SIGKILL)
				select {} // wait for the signal
			}
			return nil
		}
	}
	opts.Hooks.PreSwap = g.tpmPreSwap(cmd)
	return deploy.Open(g.sysroot, opts)
}

// --- init ---

type deployInitOptions struct {
	stateroot   string
	trustedKeys string
	revokedKeys string
	threshold   int
}

func newDeployInitCmd(g *deployGlobals) *cobra.Command {
	o := &deployInitOptions{}
	cmd := &cobra.Command{
		Use:   "init --stateroot NAME --trusted-keys DIR",
		Short: "Prepare a sysroot: repository, trust store, stateroot",
		Args:  exactArgs(0, "no arguments"),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.stateroot == "" {
				return usagef("--stateroot is required")
			}
			if o.threshold < 0 {
				return usagef("--threshold must not be negative")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			err := deploy.Init(cmd.Context(), g.sysroot, deploy.InitOptions{
				Stateroot: o.stateroot, TrustedKeys: o.trustedKeys, RevokedKeys: o.revokedKeys, Threshold: o.threshold,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised %s with stateroot %s\n", g.sysroot, o.stateroot)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.stateroot, "stateroot", "", "name of the stateroot (OS installation) to create")
	f.StringVar(&o.trustedKeys, "trusted-keys", "", "directory of *.pub keys whose signatures are accepted (copied in)")
	f.StringVar(&o.revokedKeys, "revoked-keys", "", "directory of revoked *.pub keys (copied in)")
	f.IntVar(&o.threshold, "threshold", 1, "distinct trusted signatures a commit needs")
	return cmd
}

// --- pull ---

type deployPullOptions struct{ json bool }

func newDeployPullCmd(g *deployGlobals) *cobra.Command {
	o := &deployPullOptions{}
	cmd := &cobra.Command{
		Use:   "pull [--json] SOURCE REF",
		Short: "Copy a signed commit and its objects from a local repository into the sysroot",
		Args:  exactArgs(2, "SOURCE and REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			trust, err := s.TrustStore()
			if err != nil {
				return err
			}
			res, err := pull.Pull(cmd.Context(), s.Repo(), args[0], args[1], pull.Options{Trust: trust})
			if err != nil {
				return err
			}
			if o.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s → %s: %d objects, %d fetched (%d bytes)\n", res.Ref, res.Commit, res.Objects, res.Fetched, res.FetchedBytes)
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

// --- switch / upgrade ---

type deploySwitchOptions struct {
	stateroot   string
	kargs       []string
	kargsDelete []string
	stage       bool
	verifyAll   bool
	json        bool
}

func (o *deploySwitchOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.stateroot, "stateroot", "", "stateroot to deploy into (default: the booted or default deployment's)")
	f.StringArrayVar(&o.kargs, "karg", nil, "add a kernel argument NAME[=VALUE] (repeatable)")
	f.StringArrayVar(&o.kargsDelete, "karg-delete", nil, "remove kernel arguments NAME or exactly NAME=VALUE (repeatable)")
	f.BoolVar(&o.stage, "stage", false, "prepare everything but make it the default only at `finalize` (shutdown)")
	f.BoolVar(&o.verifyAll, "verify-all", false, "re-verify every object, also those the current deployment already uses")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
}

func (o *deploySwitchOptions) switchOptions() deploy.SwitchOptions {
	return deploy.SwitchOptions{Stateroot: o.stateroot, Kargs: o.kargs, KargsDelete: o.kargsDelete, Stage: o.stage, VerifyAll: o.verifyAll}
}

func newDeploySwitchCmd(g *deployGlobals) *cobra.Command {
	o := &deploySwitchOptions{}
	cmd := &cobra.Command{
		Use:   "switch [--karg K]... [--karg-delete K]... [--stage] [--json] REF|COMMIT",
		Short: "Deploy a commit of the sysroot repository and make it the default",
		Args:  exactArgs(1, "REF or COMMIT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.Switch(cmd.Context(), args[0], o.switchOptions())
			if err != nil {
				return err
			}
			startFinalizer(cmd, g, res)
			return printSwitch(cmd.OutOrStdout(), res, o.json)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newDeployUpgradeCmd(g *deployGlobals) *cobra.Command {
	o := &deploySwitchOptions{}
	cmd := &cobra.Command{
		Use:   "upgrade [--stage] [--json]",
		Short: "Deploy the newest commit of the ref the booted deployment follows",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.Upgrade(cmd.Context(), o.switchOptions())
			if err != nil {
				return err
			}
			startFinalizer(cmd, g, res)
			return printSwitch(cmd.OutOrStdout(), res, o.json)
		},
	}
	o.addFlags(cmd)
	return cmd
}

// FinalizeUnit is the systemd unit whose ExecStop finalizes a staged
// deployment at shutdown (systemd/cfs-finalize-staged.service).
const FinalizeUnit = "cfs-finalize-staged.service"

// startFinalizer starts the finalize unit after a staged switch on the
// running system (sysroot /, systemd running), so the deployment is
// finalized at shutdown; elsewhere it says how to finalize by hand.
func startFinalizer(cmd *cobra.Command, g *deployGlobals, res *deploy.SwitchResult) {
	if !res.Staged {
		return
	}
	if filepath.Clean(g.sysroot) != "/" || !fileExists("/run/systemd/system") {
		fmt.Fprintf(cmd.ErrOrStderr(), "cfs-deploy: staged; run `cfs-deploy --sysroot %s finalize` to make it the default\n", g.sysroot)
		return
	}
	if out, err := exec.CommandContext(cmd.Context(), "systemctl", "start", FinalizeUnit).CombinedOutput(); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "cfs-deploy: warning: could not start %s (%v: %s); the staged deployment will not be finalized at shutdown\n", FinalizeUnit, err, strings.TrimSpace(string(out)))
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func printSwitch(w io.Writer, res *deploy.SwitchResult, asJSON bool) error {
	if asJSON {
		return writeJSON(w, res)
	}
	switch {
	case !res.Changed:
		fmt.Fprintln(w, res.Message)
		return nil
	case res.Staged:
		fmt.Fprintf(w, "staged %s %s (%s); it becomes the default at shutdown (cfs-deploy finalize)\n", res.Stateroot, res.Commit, res.Version)
	default:
		fmt.Fprintf(w, "deployed %s %s (%s) as the default: entry %s\n", res.Stateroot, res.Commit, res.Version, res.Entry)
	}
	fmt.Fprintf(w, "    Deployment: %s\n    Image: %s\n    Objects: %d (%d verified)\n", res.Deployment, res.ImageDigest, res.Objects, res.ObjectsVerified)
	if res.Etc != nil && len(res.Etc.Conflicts) > 0 {
		fmt.Fprintf(w, "    /etc conflicts (local version kept): %s\n", strings.Join(res.Etc.Conflicts, ", "))
	}
	return nil
}

func newDeployFinalizeCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "finalize [--json]",
		Short: "Make the staged deployment the default (run at shutdown)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.Finalize(cmd.Context())
			if err != nil {
				return err
			}
			return printSwitch(cmd.OutOrStdout(), res, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// --- rollback ---

func newDeployRollbackCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback [--json]",
		Short: "Make the rollback deployment the default",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.Rollback(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "default is now %s (was %s)\n", res.Default, res.Previous)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// --- status ---

func newDeployStatusCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "List the deployments in boot order",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			if st.TPM, err = g.tpmStatus(cmd, s); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON (schema: docs/deployments.md)")
	return cmd
}

func printStatus(w io.Writer, st *deploy.Status) {
	if len(st.Deployments) == 0 {
		fmt.Fprintln(w, "no deployments")
		return
	}
	for _, d := range st.Deployments {
		mark := " "
		if d.Booted {
			mark = "*"
		}
		var tags []string
		for _, t := range []struct {
			on   bool
			name string
		}{{d.Staged, "staged"}, {d.Pending, "pending"}, {d.Default, "default"}, {d.Rollback, "rollback"}, {d.Pinned, "pinned"}} {
			if t.on {
				tags = append(tags, t.name)
			}
		}
		label := ""
		if len(tags) > 0 {
			label = " (" + strings.Join(tags, ", ") + ")"
		}
		fmt.Fprintf(w, "%s %d: %s %s.%d%s\n", mark, d.Index, d.Stateroot, d.Commit, d.Serial, label)
		if d.Version != "" {
			fmt.Fprintf(w, "    Version: %s\n", d.Version)
		}
		if d.Origin != "" {
			fmt.Fprintf(w, "    origin refspec: %s\n", d.Origin)
		}
		fmt.Fprintf(w, "    Image: %s\n", d.ImageDigest)
		if d.Signature.Valid {
			fmt.Fprintf(w, "    Signature: valid (keys %s)\n", strings.Join(d.Signature.KeyIDs, ", "))
		} else {
			fmt.Fprintf(w, "    Signature: INVALID: %s\n", d.Signature.Error)
		}
		if c := d.BootCounter; c != nil && c.State != "blessed" {
			fmt.Fprintf(w, "    Boot counter: %s, %d tries left, %d done\n", c.State, *c.TriesLeft, *c.TriesDone)
		}
	}
}

// --- pin / unpin ---

func newDeployPinCmd(g *deployGlobals, pin bool) *cobra.Command {
	use, short := "pin INDEX", "Keep the deployment at INDEX (see status) through switch and cleanup"
	if !pin {
		use, short = "unpin INDEX", "Stop keeping the deployment at INDEX"
	}
	var index int
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "INDEX"),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return usagef("INDEX must be a deployment index from status, got %q", args[0])
			}
			index = n
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			return s.Pin(cmd.Context(), index, pin)
		},
	}
	return cmd
}

// --- cleanup ---

func newDeployCleanupCmd(g *deployGlobals) *cobra.Command {
	var asJSON, dryRun bool
	cmd := &cobra.Command{
		Use:   "cleanup [--dry-run] [--json]",
		Short: "Remove deployments beyond default, rollback, booted, staged and pinned, then prune the repository",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.Cleanup(cmd.Context(), deploy.CleanupOptions{DryRun: dryRun})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %d deployments, %d boot file directories, %d commits, %d objects (%d bytes)\n",
				verb, len(res.Deployments), len(res.BootFiles), len(res.Commits), res.Objects, res.ObjectBytes)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report what would be removed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// --- verity ---

func newDeployVerityCmd(g *deployGlobals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verity [--json]",
		Short: "Enable fs-verity on every object and deployment image that lacks it, checking each measurement",
		Long: "verity enables fs-verity on the repository's objects and the deployments' images where the sysroot\n" +
			"was written without it (built on another machine, or before the file system had the feature), so\n" +
			"that the initramfs can mount with verity = require. Each kernel measurement must equal the\n" +
			"object's name or the deployment's signed image digest. Run it once on the target machine, e.g. at\n" +
			"first boot.",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open(cmd)
			if err != nil {
				return err
			}
			res, err := s.EnableVerity(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fs-verity on %d objects (%d newly enabled) and %d deployment images (%d newly enabled); every measurement checked\n",
				res.Objects, res.ObjectsEnabled, res.Images, res.ImagesEnabled)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
