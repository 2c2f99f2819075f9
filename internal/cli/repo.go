package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/internal/progress"
	"github.com/spf13/cobra"
)

// PasswordEnv names the environment variable holding a key password.
const PasswordEnv = "CFS_PASSWORD"

func addRepoFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "repo", "", "repository directory (required)")
	_ = cmd.MarkFlagRequired("repo")
}

func newInitCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "init --repo DIR",
		Short: "Create a repository",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := repo.Init(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised repository %s\n", r.Path())
			return nil
		},
	}
	addRepoFlag(cmd, &dir)
	return cmd
}

// passwordFunc reads a key password from --password-file or $CFS_PASSWORD.
func passwordFunc(file string) sign.PasswordFunc {
	return func() ([]byte, error) {
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, err
			}
			return []byte(strings.TrimRight(string(b), "\r\n")), nil
		}
		if pw, ok := os.LookupEnv(PasswordEnv); ok {
			return []byte(pw), nil
		}
		return nil, fmt.Errorf("%w (set $%s or --password-file)", sign.ErrPasswordRequired, PasswordEnv)
	}
}

func newKeygenCmd() *cobra.Command {
	var kind, pwFile string
	var encrypt bool
	cmd := &cobra.Command{
		Use:   "keygen [--type ed25519|ecdsa-p256|rsa-3072] NAME",
		Short: "Generate a commit signing key pair: NAME.key and NAME.pub",
		Long: "Generate a signing key pair. NAME.key (mode 0600) is PKCS#8 PEM, encrypted in sigstore/cosign's\n" +
			"format when --encrypt is given (password from --password-file or $" + PasswordEnv + "). NAME.pub is\n" +
			"the PKIX public key to put in a trusted-keys directory.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kt, err := sign.ParseKeyType(kind)
			if err != nil {
				return usageError{err}
			}
			var pw []byte
			if encrypt {
				if pw, err = passwordFunc(pwFile)(); err != nil {
					return err
				}
			}
			priv, pub, err := sign.Keygen(kt, pw)
			if err != nil {
				return err
			}
			keyPath, pubPath, err := sign.WriteKeyPair(args[0], priv, pub)
			if err != nil {
				return err
			}
			pk, err := sign.ParsePublicKey(pub)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (key id %s)\n", keyPath, pubPath, pk.ID())
			return nil
		},
	}
	cmd.Flags().StringVar(&kind, "type", string(sign.KeyEd25519), "key type: ed25519, ecdsa-p256 or rsa-3072")
	cmd.Flags().BoolVar(&encrypt, "encrypt", false, "encrypt the private key with a password")
	cmd.Flags().StringVar(&pwFile, "password-file", "", "read the password from this file")
	return cmd
}

type buildOptions struct {
	repo, ref          string
	keys               []string
	pwFile             string
	subject, body, ver string
	arch               string
	metadata           []string
	rollbackIndex      int64
	threads            int
	noCache, jsonOut   bool
	verbose            bool
	opts               builder.Options
}

func newBuildCmd() *cobra.Command {
	o := &buildOptions{}
	cmd := &cobra.Command{
		Use:   "build --repo R --ref REF --key K [flags] SOURCE",
		Short: "Build a signed commit from a directory or a tar stream (file or -)",
		Long: "Build a commit from SOURCE (a root filesystem directory, a tar file, or - for a tar stream on stdin):\n" +
			"content objects, the stored dump, the composefs image, signed metadata; then move REF to it.\n" +
			"SOURCE_DATE_EPOCH sets the timestamp and clamps later file mtimes, for reproducible commits.",
		Args:    exactArgs(1, "SOURCE"),
		PreRunE: func(cmd *cobra.Command, _ []string) error { return o.complete(cmd) },
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), cmd, args[0])
		},
	}
	f := cmd.Flags()
	addRepoFlag(cmd, &o.repo)
	f.StringVar(&o.ref, "ref", "", "ref to build for and move (required), e.g. os/x86_64/stable")
	_ = cmd.MarkFlagRequired("ref")
	f.StringArrayVar(&o.keys, "key", nil, "signing key file (repeat for several signatures; required)")
	f.StringVar(&o.pwFile, "password-file", "", "password of encrypted keys (else $"+PasswordEnv+")")
	f.StringVar(&o.subject, "subject", "", "one-line subject")
	f.StringVar(&o.body, "body", "", "longer description")
	f.StringVar(&o.ver, "version", "", "version string, e.g. 42.1")
	f.StringVar(&o.arch, "arch", "", "architecture (default: this machine's)")
	f.StringArrayVar(&o.metadata, "add-metadata", nil, "user metadata KEY=VALUE (repeatable)")
	f.Int64Var(&o.rollbackIndex, "rollback-index", -1, "anti-rollback index (default: the parent's); never below the parent's")
	f.IntVar(&o.threads, "threads", 0, "threads hashing and copying files (default: all CPUs)")
	f.BoolVar(&o.noCache, "no-cache", false, "re-read every file instead of trusting the build cache")
	f.BoolVar(&o.jsonOut, "json", false, "print the result as JSON")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log the time of each phase on stderr")
	return cmd
}

func (o *buildOptions) complete(cmd *cobra.Command) error {
	if len(o.keys) == 0 {
		return usagef("--key is required")
	}
	for _, k := range o.keys {
		s, err := sign.LoadSigner(k, passwordFunc(o.pwFile))
		if err != nil {
			return err
		}
		o.opts.Signers = append(o.opts.Signers, s)
	}
	if len(o.metadata) > 0 {
		o.opts.Metadata = map[string]string{}
		for _, kv := range o.metadata {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usagef("--add-metadata %q: want KEY=VALUE", kv)
			}
			o.opts.Metadata[k] = v
		}
	}
	if o.rollbackIndex >= 0 {
		ri := uint64(o.rollbackIndex)
		o.opts.RollbackIndex = &ri
	}
	if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
		ts, err := strconv.ParseInt(sde, 10, 64)
		if err != nil || ts <= 0 {
			return usagef("SOURCE_DATE_EPOCH=%q: want a positive number of seconds", sde)
		}
		o.opts.Timestamp = ts
	}
	o.opts.Ref, o.opts.Subject, o.opts.Body, o.opts.Version, o.opts.Architecture = o.ref, o.subject, o.body, o.ver, o.arch
	o.opts.Threads = o.threads
	return nil
}

func (o *buildOptions) run(ctx context.Context, cmd *cobra.Command, source string) error {
	r, err := repo.Open(o.repo)
	if err != nil {
		return err
	}
	var src builder.Source
	if source == "-" {
		src.Tar = cmd.InOrStdin()
	} else {
		st, err := os.Stat(source)
		if err != nil {
			return err
		}
		if st.IsDir() {
			src.Dir = source
		} else {
			f, err := os.Open(source)
			if err != nil {
				return err
			}
			defer f.Close()
			src.Tar = f
		}
	}
	var log *slog.Logger
	if o.verbose {
		log = debugLogger(cmd)
		o.opts.Logger = log
	}
	var cache *builder.FileCache
	if !o.noCache && src.Dir != "" {
		t := time.Now()
		cache = builder.OpenFileCache(filepath.Join(r.Path(), repo.CacheDir, "digests"))
		o.opts.Cache = cache
		if log != nil {
			log.Debug("build cache opened", "time", time.Since(t))
		}
	}
	bar := progress.New(os.Stderr, "building "+o.ref)
	if bar != nil {
		o.opts.Progress = func(p composefs.BuildProgress) { bar.Update(p.Files, p.Bytes) }
	}
	start := time.Now()
	res, err := builder.Build(ctx, r, src, o.opts)
	bar.Done()
	if source == "-" {
		// Drain what follows the end-of-archive marker so the writer of
		// the stream does not die of SIGPIPE.
		_, _ = io.Copy(io.Discard, cmd.InOrStdin())
	}
	if err != nil {
		return err
	}
	if cache != nil {
		t := time.Now()
		if err := cache.Save(); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "cfs-commit: warning: build cache not saved: %v\n", err)
		} else if log != nil {
			log.Debug("build cache saved", "time", time.Since(t))
		}
	}
	if o.jsonOut {
		return writeJSON(cmd.OutOrStdout(), res)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "commit %s\n", res.Commit)
	fmt.Fprintf(w, "ref %s, image %s\n", res.Ref, res.ImageDigest)
	fmt.Fprintf(w, "%d files, %d objects (%s), %d new objects written (%s) in %.1fs\n",
		res.Files, res.Objects, progress.HumanBytes(res.ObjectsSize), res.ObjectsWritten, progress.HumanBytes(res.BytesWritten), time.Since(start).Seconds())
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func openRepoResolve(dir, rev string) (*repo.Repo, commit.ID, error) {
	r, err := repo.Open(dir)
	if err != nil {
		return nil, commit.ID{}, err
	}
	id, err := r.Resolve(rev)
	return r, id, err
}

func newLogCmd() *cobra.Command {
	var dir string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "log --repo R REF|COMMIT",
		Short: "Show the history of a ref, newest first",
		Args:  exactArgs(1, "REF or COMMIT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, id, err := openRepoResolve(dir, args[0])
			if err != nil {
				return err
			}
			type entry struct {
				Commit commit.ID `json:"commit"`
				*commit.Metadata
			}
			var out []entry
			for {
				m, _, err := r.ReadCommit(id)
				if err != nil {
					if errors.Is(err, repo.ErrCommitMissing) && len(out) > 0 {
						break // history pruned beyond this point
					}
					return err
				}
				out = append(out, entry{id, m})
				if m.Parent == nil {
					break
				}
				id = *m.Parent
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			for _, e := range out {
				fmt.Fprintf(w, "commit %s\n", e.Commit)
				fmt.Fprintf(w, "Date:    %s\n", e.Time().Format(time.RFC3339))
				if e.Version != "" {
					fmt.Fprintf(w, "Version: %s\n", e.Version)
				}
				fmt.Fprintf(w, "Image:   %s\n", e.Image.Digest)
				if e.Subject != "" {
					fmt.Fprintf(w, "\n    %s\n", e.Subject)
				}
				fmt.Fprintln(w)
			}
			return nil
		},
	}
	addRepoFlag(cmd, &dir)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return cmd
}

func newShowCmd() *cobra.Command {
	var dir string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "show --repo R [--json] COMMIT|REF",
		Short: "Show a commit's metadata and signatures (not verified: see verify)",
		Args:  exactArgs(1, "COMMIT or REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, id, err := openRepoResolve(dir, args[0])
			if err != nil {
				return err
			}
			m, _, err := r.ReadCommit(id)
			if err != nil {
				return err
			}
			var keyIDs []string
			if raw, err := r.ReadSignature(id); err == nil {
				if env, err := sign.ParseEnvelope(raw); err == nil {
					for _, s := range env.Signatures {
						keyIDs = append(keyIDs, s.KeyID)
					}
				}
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), struct {
					Commit     commit.ID        `json:"commit"`
					Metadata   *commit.Metadata `json:"metadata"`
					Signatures []string         `json:"signature-key-ids"`
				}{id, m, keyIDs})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "commit        %s\n", id)
			if m.Parent != nil {
				fmt.Fprintf(w, "parent        %s\n", m.Parent)
			}
			fmt.Fprintf(w, "ref           %s\ndate          %s\nversion       %s\narchitecture  %s\nrollback      %d\n", m.Ref, m.Time().Format(time.RFC3339), m.Version, m.Architecture, m.RollbackIndex)
			fmt.Fprintf(w, "image         %s (format %d, %d bytes)\ndump          %s (%d bytes)\n", m.Image.Digest, m.Image.FormatVersion, m.Image.Size, m.Dump.Digest, m.Dump.Size)
			fmt.Fprintf(w, "objects       %d (%s)\n", m.Objects.Count, progress.HumanBytes(m.Objects.Size))
			if m.Kernel != nil {
				fmt.Fprintf(w, "kernel        %s %s\n", m.Kernel.Version, m.Kernel.Vmlinuz.Digest)
			}
			for _, k := range sortedKeys(m.Metadata) {
				fmt.Fprintf(w, "metadata      %s=%s\n", k, m.Metadata[k])
			}
			fmt.Fprintf(w, "signed by     %s\n", strings.Join(keyIDs, ", "))
			if m.Subject != "" {
				fmt.Fprintf(w, "\n    %s\n", m.Subject)
			}
			return nil
		},
	}
	addRepoFlag(cmd, &dir)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return cmd
}

func newDiffCmd() *cobra.Command {
	var dir string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "diff --repo R A B",
		Short: "List paths added (A), removed (D) and modified (M) from commit A to commit B",
		Args:  exactArgs(2, "two commits or refs"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := repo.Open(dir)
			if err != nil {
				return err
			}
			var trees [2]*composefs.Node
			for i, rev := range args {
				id, err := r.Resolve(rev)
				if err != nil {
					return err
				}
				m, _, err := r.ReadCommit(id)
				if err != nil {
					return err
				}
				if trees[i], err = r.LoadTree(cmd.Context(), m); err != nil {
					return err
				}
			}
			changes := composefs.Diff(trees[0], trees[1])
			if jsonOut {
				type change struct {
					Kind string `json:"kind"`
					Path string `json:"path"`
				}
				out := []change{}
				for _, c := range changes {
					out = append(out, change{map[composefs.ChangeKind]string{composefs.Added: "added", composefs.Removed: "removed", composefs.Modified: "modified"}[c.Kind], c.Path})
				}
				return writeJSON(cmd.OutOrStdout(), out)
			}
			for _, c := range changes {
				fmt.Fprintf(cmd.OutOrStdout(), "%c %s\n", c.Kind, c.Path)
			}
			return nil
		},
	}
	addRepoFlag(cmd, &dir)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return cmd
}

type trustFlags struct {
	dir, revokedDir, revokedFile string
	threshold                    int
}

func (t *trustFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&t.dir, "trusted-keys", "", "directory of trusted *.pub keys (required)")
	f.StringVar(&t.revokedDir, "revoked-keys", "", "directory of revoked *.pub keys")
	f.StringVar(&t.revokedFile, "revoked-ids", "", "file of revoked key ids, one per line")
	f.IntVar(&t.threshold, "threshold", 1, "number of distinct trusted keys that must have signed")
}

func (t *trustFlags) load() (*sign.TrustStore, error) {
	if t.dir == "" {
		return nil, usagef("--trusted-keys is required")
	}
	return sign.LoadTrustStore(t.dir, sign.TrustOptions{Threshold: t.threshold, RevokedDir: t.revokedDir, RevokedFile: t.revokedFile})
}

func newVerifyCmd() *cobra.Command {
	var dir string
	var trust trustFlags
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "verify --repo R --trusted-keys DIR COMMIT|REF",
		Short: "Verify a commit: signature, image regenerated from the stored dump, image object",
		Args:  exactArgs(1, "COMMIT or REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := trust.load()
			if err != nil {
				return err
			}
			r, id, err := openRepoResolve(dir, args[0])
			if err != nil {
				return err
			}
			res, err := r.VerifyCommit(cmd.Context(), id, ts)
			if err != nil {
				return verifyError{err}
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"commit": id, "image-digest": res.Metadata.Image.Digest, "key-ids": res.KeyIDs, "valid": true})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "commit %s: signature valid (keys %s), image %s regenerates from its dump\n", id, strings.Join(res.KeyIDs, ", "), res.Metadata.Image.Digest)
			return nil
		},
	}
	addRepoFlag(cmd, &dir)
	trust.add(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	return cmd
}

// verifyError marks a failed verification (exit code ExitVerify).
type verifyError struct{ error }

func (e verifyError) Unwrap() error { return e.error }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
