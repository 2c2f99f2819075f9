package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/internal/progress"
	"github.com/spf13/cobra"
)

type fsckOptions struct {
	repo    string
	trust   trustFlags
	jsonOut bool
	verbose bool
	opts    repo.FsckOptions
}

func newFsckCmd() *cobra.Command {
	o := &fsckOptions{}
	cmd := &cobra.Command{
		Use:   "fsck --repo R [--trusted-keys DIR] [--repair] [--json]",
		Short: "Check a repository: objects, commits, signatures, images, refs",
		Long: "Re-hash every object against its name, check every commit against its id and its signature\n" +
			"(verified with --trusted-keys, else for form only), regenerate every commit's image from its stored\n" +
			"dump and compare it with the signed digest, check that every object a commit needs is stored and\n" +
			"every ref names a stored commit, and list the leftovers of interrupted writers.\n\n" +
			"--repair moves corrupt objects and commits into R/quarantine/ (kept for forensics, never served),\n" +
			"restores image objects from their dumps, reports the commits left incomplete, and removes the\n" +
			"leftovers when no build is running. Exits 4 when problems were found (even if repaired).",
		Args: exactArgs(0, "no arguments"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if o.trust.dir == "" {
				return nil
			}
			ts, err := o.trust.load()
			if err != nil {
				return err
			}
			o.opts.Trust = ts
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(o.repo)
			if err != nil {
				return err
			}
			if o.verbose {
				o.opts.Logger = debugLogger(cmd)
			}
			rep, err := r.Fsck(cmd.Context(), o.opts)
			if err != nil {
				return err
			}
			if o.jsonOut {
				if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printFsck(cmd, rep)
			}
			if !rep.Clean() {
				return verifyError{fmt.Errorf("fsck: %d problem(s) found in %s", len(rep.Problems), r.Path())}
			}
			return nil
		},
	}
	f := cmd.Flags()
	addRepoFlag(cmd, &o.repo)
	f.StringVar(&o.trust.dir, "trusted-keys", "", "directory of trusted *.pub keys to verify signatures with (default: check their form only)")
	f.StringVar(&o.trust.revokedDir, "revoked-keys", "", "directory of revoked *.pub keys")
	f.StringVar(&o.trust.revokedFile, "revoked-ids", "", "file of revoked key ids, one per line")
	f.IntVar(&o.trust.threshold, "threshold", 1, "number of distinct trusted keys that must have signed")
	f.BoolVar(&o.opts.Repair, "repair", false, "quarantine corrupt objects and commits, restore images, remove leftovers")
	f.IntVar(&o.opts.Workers, "threads", 0, "threads hashing objects (default: all CPUs)")
	f.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log progress on stderr")
	return cmd
}

func printFsck(cmd *cobra.Command, rep *repo.FsckReport) {
	w := cmd.OutOrStdout()
	sigs := "signatures verified"
	if !rep.SignaturesVerified {
		sigs = "signatures NOT verified (no --trusted-keys), checked for form only"
	}
	fmt.Fprintf(w, "checked %d objects (%s), %d commits (%s), %d refs\n",
		rep.Objects, progress.HumanBytes(rep.ObjectBytes), rep.Commits, sigs, rep.Refs)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, p := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	for _, id := range rep.IncompleteCommits {
		fmt.Fprintf(w, "incomplete commit: %s\n", id)
	}
	if len(rep.Leftovers) > 0 {
		var size int64
		for _, l := range rep.Leftovers {
			size += l.Size
		}
		switch {
		case len(rep.Leftovers) > 0 && rep.Leftovers[0].Removed:
			fmt.Fprintf(w, "removed %d leftovers of interrupted writers (%s)\n", len(rep.Leftovers), progress.HumanBytes(size))
		case rep.LeftoversKept != "":
			fmt.Fprintf(w, "%d leftovers (%s) not removed: %s\n", len(rep.Leftovers), progress.HumanBytes(size), rep.LeftoversKept)
		default:
			fmt.Fprintf(w, "%d leftovers of interrupted (or running) writers (%s); --repair removes them\n", len(rep.Leftovers), progress.HumanBytes(size))
		}
	}
	if rep.Clean() {
		fmt.Fprintln(w, "no problems found")
	}
}

type pruneOptions struct {
	repo    string
	jsonOut bool
	opts    repo.PruneOptions
}

func newPruneCmd() *cobra.Command {
	o := &pruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune --repo R --keep N [--dry-run] [--json]",
		Short: "Remove commits and objects no ref needs",
		Long: "Keep the newest N commits of every ref's history (N ≥ 1: 1 keeps just what the refs point at) and\n" +
			"every object they need; remove every other commit and object, and the leftovers of interrupted\n" +
			"writers. Safe while builds run: prune waits for running builds, and new ones wait for it.\n" +
			"quarantine/ is never touched.",
		Args: exactArgs(0, "no arguments"),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if o.opts.Keep < 1 {
				return usagef("--keep %d: must be at least 1 (the commit a ref points at is always kept; delete the ref to drop it)", o.opts.Keep)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Open(o.repo)
			if err != nil {
				return err
			}
			// Deployments reference commits without refs: only
			// cfs-deploy cleanup knows what a sysroot still needs.
			if abs, err := filepath.Abs(o.repo); err == nil && filepath.Base(abs) == "repo" {
				if st, err := os.Stat(filepath.Join(filepath.Dir(abs), "deploy")); err == nil && st.IsDir() {
					return usagef("%s is the repository of a sysroot with deployments: use cfs-deploy cleanup, which keeps what deployments need", o.repo)
				}
			}
			rep, err := r.Prune(cmd.Context(), o.opts)
			if err != nil {
				return err
			}
			if o.jsonOut {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			printPrune(cmd, rep)
			return nil
		},
	}
	f := cmd.Flags()
	addRepoFlag(cmd, &o.repo)
	f.IntVar(&o.opts.Keep, "keep", 0, "commits of each ref's history to keep, the ref's own included (required, ≥ 1)")
	_ = cmd.MarkFlagRequired("keep")
	f.BoolVar(&o.opts.DryRun, "dry-run", false, "list what would be removed, remove nothing")
	f.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	return cmd
}

func printPrune(cmd *cobra.Command, rep *repo.PruneReport) {
	w := cmd.OutOrStdout()
	verb, freed := "removed", "freed"
	if rep.DryRun {
		verb, freed = "would remove", "would be freed"
		for _, id := range rep.Commits {
			fmt.Fprintf(w, "would remove commit %s\n", id)
		}
		for _, d := range rep.Objects {
			fmt.Fprintf(w, "would remove object %s\n", d)
		}
		for _, l := range rep.Leftovers {
			fmt.Fprintf(w, "would remove leftover %s (%s)\n", l.Path, progress.HumanBytes(l.Size))
		}
	}
	fmt.Fprintf(w, "%s %d commits, %d objects (%s), %d leftovers: %s %s; keeping %d commits and %d objects\n",
		verb, len(rep.Commits), len(rep.Objects), progress.HumanBytes(rep.ObjectBytes), len(rep.Leftovers),
		progress.HumanBytes(rep.BytesFreed), freed, rep.KeptCommits, rep.KeptObjects)
}
