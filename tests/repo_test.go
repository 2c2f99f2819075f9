// Package tests holds end-to-end tests that build the real cfs-commit
// binary once and drive it as users and CI jobs do.
package tests

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// cfsBin is the cfs-commit binary TestMain builds.
var cfsBin string

// Exit codes of the cfs tools (internal/cli).
const (
	exitInvalid = 3
	exitVerify  = 4
)

type mainRunner struct{ m *testing.M }

// Run builds cfs-commit into a world-readable temporary directory (tests
// run it as an unprivileged user too), then runs the tests.
func (r mainRunner) Run() int {
	dir, err := os.MkdirTemp("", "cfs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfsBin = filepath.Join(dir, "cfs-commit")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", cfsBin, "./cmd/cfs-commit")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building cfs-commit: %v\n%s", err, out)
		return 1
	}
	return r.m.Run()
}

func TestMain(m *testing.M) {
	// The full-disk test mounts a loop filesystem: run in a private mount
	// namespace when root.
	os.Exit(testutil.RunInMountNS(mainRunner{m}))
}

// result is what a cfs-commit run gave.
type result struct {
	stdout, stderr string
	code           int
	killed         bool
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// command returns a cfs-commit command with a hermetic environment plus
// env.
func command(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(cfsBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") && !strings.HasPrefix(kv, "CFS_PASSWORD=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// wait runs or waits for cmd, whose output goes to the buffers.
func finish(t testing.TB, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, err error) result {
	t.Helper()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			r.killed = true
		}
	default:
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return r
}

func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return finish(t, cmd, &stdout, &stderr, cmd.Run())
}

// cfs runs cfs-commit and returns its result, whatever the exit code.
func cfs(t testing.TB, args ...string) result {
	t.Helper()
	return runCmd(t, command(nil, args...))
}

// ok runs cfs-commit and fails the test unless it exits 0.
func ok(t testing.TB, args ...string) string {
	t.Helper()
	r := cfs(t, args...)
	if r.code != 0 {
		t.Fatalf("cfs-commit %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fails checks that a run failed with code (any non-zero if 0) and that
// stderr contains every one of wants.
func fails(t testing.TB, r result, code int, wants ...string) {
	t.Helper()
	if r.code == 0 || (code != 0 && r.code != code) {
		t.Fatalf("want exit code %d, got %s", code, r)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not name %q:\n%s", w, r.stderr)
		}
	}
}

func decode[T any](t testing.TB, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

// env is a repository with a signing key and a trusted-keys directory
// holding its public key.
type env struct {
	repo, key, trusted string
}

func newEnv(t testing.TB, dir, keyType string) env {
	t.Helper()
	e := env{repo: filepath.Join(dir, "repo"), key: filepath.Join(dir, "key.key"), trusted: filepath.Join(dir, "trusted")}
	ok(t, "init", "--repo", e.repo)
	ok(t, "keygen", "--type", keyType, filepath.Join(dir, "key"))
	if err := os.MkdirAll(e.trusted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "key.pub"), filepath.Join(e.trusted, "key.pub")); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e env) build(t testing.TB, ref, src string, extra ...string) builder.Result {
	t.Helper()
	args := append([]string{"build", "--repo", e.repo, "--ref", ref, "--key", e.key, "--json"}, extra...)
	return decode[builder.Result](t, ok(t, append(args, src)...))
}

func (e env) trust(t testing.TB) *sign.TrustStore {
	t.Helper()
	ts, err := sign.LoadTrustStore(e.trusted, sign.TrustOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// fsck runs fsck --json with the trusted keys and returns the report and
// the exit code.
func (e env) fsck(t testing.TB, extra ...string) (*repo.FsckReport, int) {
	t.Helper()
	r := cfs(t, append([]string{"fsck", "--repo", e.repo, "--trusted-keys", e.trusted, "--json"}, extra...)...)
	rep := decode[repo.FsckReport](t, r.stdout)
	if (r.code == 0) != rep.Clean() {
		t.Errorf("fsck exit code %d with %d problems: %s", r.code, len(rep.Problems), r)
	}
	return &rep, r.code
}

func (e env) mustFsckClean(t testing.TB) *repo.FsckReport {
	t.Helper()
	rep, code := e.fsck(t)
	if code != 0 || !rep.Clean() {
		t.Fatalf("fsck: exit %d, problems %v", code, rep.Problems)
	}
	return rep
}

// writeFiles writes a tree: path → content (a "->" prefix makes a
// symlink).
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// genTree writes n files of random content (up to maxSize bytes) from
// seed into 20 directories, replacing what is there.
func genTree(t testing.TB, dir string, n, maxSize int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	buf := make([]byte, maxSize)
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("d%02d", i%20))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		size := rng.IntN(maxSize)
		for j := 0; j < size; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < size; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), buf[:size], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkComplete checks that a commit verifies (signature, image
// regenerated from the dump, image object) and that every object its
// tree references is stored intact.
func checkComplete(t testing.TB, repoDir string, trust *sign.TrustStore, id commit.ID) {
	t.Helper()
	r, err := repo.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := r.VerifyCommit(ctx, id, trust)
	if err != nil {
		t.Fatalf("commit %s: %v", id, err)
	}
	root, err := r.LoadTree(ctx, res.Metadata)
	if err != nil {
		t.Fatalf("commit %s: %v", id, err)
	}
	var n int64
	seen := map[string]bool{}
	err = root.Walk(func(p string, node *composefs.Node) error {
		if !node.HasExternalData() || seen[node.Payload] {
			return nil
		}
		seen[node.Payload] = true
		d, err := fsverity.ParseObjectPath(node.Payload)
		if err != nil {
			return err
		}
		n++
		if err := r.Objects.Verify(ctx, d); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("commit %s incomplete: %v", id, err)
	}
	if n != res.Metadata.Objects.Count {
		t.Fatalf("commit %s: %d objects referenced, metadata says %d", id, n, res.Metadata.Objects.Count)
	}
}

func readRef(t testing.TB, repoDir, ref string) (commit.ID, bool) {
	t.Helper()
	r, err := repo.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := r.ReadRef(ref)
	if errors.Is(err, repo.ErrRefNotFound) {
		return id, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return id, true
}

func TestRoundTripKeyTypes(t *testing.T) {
	for _, kt := range []string{"ed25519", "ecdsa-p256", "rsa-3072"} {
		t.Run(kt, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			e := newEnv(t, dir, kt)
			tree := filepath.Join(dir, "tree")
			writeFiles(t, tree, map[string]string{
				"usr/lib/modules/6.1.0/vmlinuz":       strings.Repeat("kernel", 100),
				"usr/lib/modules/6.1.0/initramfs.img": strings.Repeat("initrd", 100),
				"etc/os-release":                      "ID=test\n",
				"usr/bin/tool":                        strings.Repeat("tool", 500),
				"usr/bin/link":                        "->tool",
			})
			res := e.build(t, "os/x86_64/stable", tree, "--subject", "first", "--version", "1.0", "--add-metadata", "team=os")
			if res.Commit.IsZero() || res.ImageDigest.IsZero() || res.Objects != 3 {
				t.Fatalf("build result %+v", res)
			}

			type shown struct {
				Commit     commit.ID        `json:"commit"`
				Metadata   *commit.Metadata `json:"metadata"`
				Signatures []string         `json:"signature-key-ids"`
			}
			s := decode[shown](t, ok(t, "show", "--repo", e.repo, "--json", "os/x86_64/stable"))
			if s.Commit != res.Commit || s.Metadata.Image.Digest != res.ImageDigest || s.Metadata.Subject != "first" ||
				s.Metadata.Version != "1.0" || s.Metadata.Metadata["team"] != "os" || s.Metadata.Kernel == nil ||
				s.Metadata.Kernel.Version != "6.1.0" || s.Metadata.Kernel.Initramfs == nil || !slices.Equal(s.Signatures, res.KeyIDs) {
				t.Errorf("show: %+v, build: %+v", s, res)
			}
			out := ok(t, "verify", "--repo", e.repo, "--trusted-keys", e.trusted, res.Commit.String())
			if !strings.Contains(out, "signature valid") || !strings.Contains(out, res.ImageDigest.String()) {
				t.Errorf("verify: %s", out)
			}

			// A second commit: its parent is the first, log lists both.
			writeFiles(t, tree, map[string]string{"etc/new": strings.Repeat("new", 50)})
			res2 := e.build(t, "os/x86_64/stable", tree, "--subject", "second")
			if res2.Parent == nil || *res2.Parent != res.Commit {
				t.Errorf("parent %v, want %s", res2.Parent, res.Commit)
			}
			log := ok(t, "log", "--repo", e.repo, "os/x86_64/stable")
			if i, j := strings.Index(log, res2.Commit.String()), strings.Index(log, res.Commit.String()); i < 0 || j < i {
				t.Errorf("log does not list %s then %s:\n%s", res2.Commit, res.Commit, log)
			}
			ok(t, "verify", "--repo", e.repo, "--trusted-keys", e.trusted, "os/x86_64/stable^")
			if d := ok(t, "diff", "--repo", e.repo, res.Commit.String(), res2.Commit.String()); !strings.Contains(d, "A /etc/new") {
				t.Errorf("diff: %s", d)
			}

			// A key that is not trusted is refused, by name.
			other := filepath.Join(dir, "other")
			ok(t, "keygen", "--type", kt, filepath.Join(dir, "stranger"))
			os.MkdirAll(other, 0o755)
			os.Rename(filepath.Join(dir, "stranger.pub"), filepath.Join(other, "stranger.pub"))
			fails(t, cfs(t, "verify", "--repo", e.repo, "--trusted-keys", other, "os/x86_64/stable"), exitVerify, "not in the trust store")
			e.mustFsckClean(t)
		})
	}
}

// flipByte flips one bit in the middle of a file.
func flipByte(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingDetected(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, "ed25519")
	tree := filepath.Join(dir, "tree")
	content := strings.Repeat("payload", 100)
	writeFiles(t, tree, map[string]string{"usr/bin/a": content, "usr/bin/b": strings.Repeat("other", 100)})
	res := e.build(t, "os/x86_64/stable", tree)
	e.mustFsckClean(t)
	objPath := func(d fsverity.Digest) string { return "objects/" + d.ObjectPath() }
	contentObj := fsverity.DigestBytes([]byte(content))

	for _, tc := range []struct {
		name   string
		tamper string // file to flip a byte in, relative to the repository
		// what verify and fsck must say
		verifyMsg []string // empty: verify does not look at it
		kind      repo.ProblemKind
		object    *fsverity.Digest
	}{
		{name: "metadata", tamper: "commits/" + res.Commit.String() + ".commit",
			verifyMsg: []string{"commit does not match its id", res.Commit.String()}, kind: repo.ProblemCorruptCommit},
		{name: "signature", tamper: "commits/" + res.Commit.String() + ".sig",
			verifyMsg: []string{"invalid signature"}, kind: repo.ProblemBadSignature},
		{name: "dump", tamper: objPath(res.DumpDigest),
			verifyMsg: []string{"corrupt object", objPath(res.DumpDigest)}, kind: repo.ProblemCorruptObject, object: &res.DumpDigest},
		{name: "image", tamper: objPath(res.ImageDigest),
			verifyMsg: []string{"image object", "corrupt object", objPath(res.ImageDigest)}, kind: repo.ProblemCorruptObject, object: &res.ImageDigest},
		{name: "object", tamper: objPath(contentObj), kind: repo.ProblemCorruptObject, object: &contentObj},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := env{repo: filepath.Join(t.TempDir(), "repo"), key: e.key, trusted: e.trusted}
			if out, err := exec.Command("cp", "-a", e.repo, c.repo).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			target := filepath.Join(c.repo, filepath.FromSlash(tc.tamper))
			if tc.name == "signature" {
				// Flip a bit of the signature itself, keeping the
				// envelope well-formed.
				raw, err := os.ReadFile(target)
				if err != nil {
					t.Fatal(err)
				}
				env, err := sign.ParseEnvelope(raw)
				if err != nil {
					t.Fatal(err)
				}
				env.Signatures[0].Sig[5] ^= 0x01
				raw, _ = env.Marshal()
				os.WriteFile(target, raw, 0o644)
			} else {
				flipByte(t, target)
			}
			vr := cfs(t, "verify", "--repo", c.repo, "--trusted-keys", c.trusted, res.Commit.String())
			if len(tc.verifyMsg) > 0 {
				fails(t, vr, exitVerify, tc.verifyMsg...)
			} else if vr.code != 0 {
				t.Errorf("verify does not hash content objects, yet failed: %s", vr)
			}
			rep, code := c.fsck(t)
			if code != exitVerify {
				t.Errorf("fsck exit code %d, want %d", code, exitVerify)
			}
			var found *repo.Problem
			for i, p := range rep.Problems {
				if p.Kind == tc.kind {
					found = &rep.Problems[i]
				}
			}
			switch {
			case found == nil:
				t.Fatalf("fsck found no %s problem: %v", tc.kind, rep.Problems)
			case tc.object != nil && (found.Object == nil || *found.Object != *tc.object || found.Path != tc.tamper):
				t.Errorf("fsck %s problem %+v, want object %s at %s", tc.kind, found, tc.object, tc.tamper)
			case tc.object == nil && (found.Commit == nil || *found.Commit != res.Commit):
				t.Errorf("fsck %s problem %+v, want commit %s", tc.kind, found, res.Commit)
			}
			// The human output names it too.
			fails(t, cfs(t, "fsck", "--repo", c.repo, "--trusted-keys", c.trusted), exitVerify, "problem(s) found")
		})
	}
}

func TestReproducible(t *testing.T) {
	base := t.TempDir()
	files := []struct{ path, content string }{
		{"usr/bin/big", strings.Repeat("0123456789abcdef", 1000)},
		{"usr/bin/small", "tiny\n"},
		{"usr/lib/libx.so.1", strings.Repeat("lib", 300)},
		{"usr/lib/libx.so", "->libx.so.1"},
		{"etc/hostname", "host\n"},
		{"etc/empty", ""},
		{"var/lib/state/data", strings.Repeat("state", 80)},
		{"usr/share/doc/same-as-big", strings.Repeat("0123456789abcdef", 1000)},
	}
	dirs := []string{"usr/bin", "usr/lib", "etc", "var/lib/state", "var/empty", "usr/share/doc"}
	mk := func(name string, reverse bool, mtime time.Time) string {
		root := filepath.Join(base, name)
		fs, ds := slices.Clone(files), slices.Clone(dirs)
		if reverse {
			slices.Reverse(fs)
			slices.Reverse(ds)
		}
		for _, d := range ds {
			os.MkdirAll(filepath.Join(root, d), 0o755)
		}
		for _, f := range fs {
			writeFiles(t, root, map[string]string{f.path: f.content})
		}
		// A hard link, made from opposite ends.
		a, b := filepath.Join(root, "usr/bin/big"), filepath.Join(root, "usr/bin/big-link")
		if reverse {
			os.Rename(a, b)
			a, b = b, a
		}
		if err := os.Link(a, b); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(filepath.Join(root, "usr/bin/small"), "user.cfs-test", []byte("x"), 0); err != nil {
			t.Logf("no user xattrs here: %v", err)
		}
		// Different (later than SOURCE_DATE_EPOCH) times everywhere.
		filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode()&os.ModeSymlink == 0 {
				os.Chtimes(p, mtime, mtime)
			}
			return nil
		})
		return root
	}
	treeA := mk("a", false, time.Now())
	treeB := mk("b", true, time.Now().Add(3*time.Hour))

	var results [2]builder.Result
	for i, tree := range []string{treeA, treeB} {
		e := newEnv(t, filepath.Join(base, fmt.Sprint("env", i)), []string{"ed25519", "ecdsa-p256"}[i])
		r := runCmd(t, command([]string{"SOURCE_DATE_EPOCH=1700000000"},
			"build", "--repo", e.repo, "--ref", "os/x86_64/stable", "--key", e.key, "--json", "--arch", "x86_64", tree))
		if r.code != 0 {
			t.Fatalf("build %s: %s", tree, r)
		}
		results[i] = decode[builder.Result](t, r.stdout)
	}
	a, b := results[0], results[1]
	if a.Commit != b.Commit || a.ImageDigest != b.ImageDigest || a.DumpDigest != b.DumpDigest {
		t.Fatalf("not reproducible:\n%+v\n%+v", a, b)
	}
	if slices.Equal(a.KeyIDs, b.KeyIDs) {
		t.Fatal("both builds signed with the same key: the test would not show that the id is independent of the signer")
	}
}

func TestConcurrentBuildsAndPrune(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, "ed25519")
	treeA, treeB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	trust := e.trust(t)
	const rounds = 10
	var last [2]builder.Result
	for round := range rounds {
		// New content each round, so builds write objects and prune has
		// superseded commits and objects to sweep.
		genTree(t, treeA, 150, 20000, uint64(2*round))
		genTree(t, treeB, 150, 20000, uint64(2*round+1))
		refB := "os/a" // even rounds: both builds move the same ref
		if round%2 == 1 {
			refB = "os/b"
		}
		type job struct {
			args []string
			res  result
		}
		jobs := []*job{
			{args: []string{"build", "--repo", e.repo, "--ref", "os/a", "--key", e.key, "--json", treeA}},
			{args: []string{"build", "--repo", e.repo, "--ref", refB, "--key", e.key, "--json", treeB}},
			{args: []string{"prune", "--repo", e.repo, "--keep", "1"}},
		}
		var wg sync.WaitGroup
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j.res = cfs(t, j.args...)
			}()
		}
		wg.Wait()
		for _, j := range jobs {
			if j.res.code != 0 {
				t.Fatalf("round %d: %v: %s", round, j.args, j.res)
			}
		}
		last[0] = decode[builder.Result](t, jobs[0].res.stdout)
		last[1] = decode[builder.Result](t, jobs[1].res.stdout)
		for _, ref := range []string{"os/a", "os/b"} {
			if id, ok := readRef(t, e.repo, ref); ok {
				checkComplete(t, e.repo, trust, id)
			}
		}
	}
	// The last round used two refs: both its commits are the heads, and
	// complete.
	for i, ref := range []string{"os/a", "os/b"} {
		id, _ := readRef(t, e.repo, ref)
		if id != last[i].Commit {
			t.Errorf("%s at %s, want the last build's %s", ref, id, last[i].Commit)
		}
		checkComplete(t, e.repo, trust, last[i].Commit)
	}
	rep := e.mustFsckClean(t)
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings: %v", rep.Warnings)
	}
	// A final prune keeps exactly the two heads.
	ok(t, "prune", "--repo", e.repo, "--keep", "1")
	if rep := e.mustFsckClean(t); rep.Commits != 2 {
		t.Errorf("%d commits after prune --keep 1 of two refs", rep.Commits)
	}
}

func TestPruneCLI(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, "ed25519")
	tree := filepath.Join(dir, "tree")
	var ids []commit.ID
	for i := range 3 {
		writeFiles(t, tree, map[string]string{"etc/version": strings.Repeat(fmt.Sprint(i), 100)})
		ids = append(ids, e.build(t, "os/x86_64/stable", tree).Commit)
	}
	dry := decode[repo.PruneReport](t, ok(t, "prune", "--repo", e.repo, "--keep", "2", "--dry-run", "--json"))
	if !slices.Equal(dry.Commits, ids[:1]) || len(dry.Objects) != 3 || !dry.DryRun {
		t.Fatalf("dry run: %+v, want commit %s and its 3 objects", dry, ids[0])
	}
	if out := ok(t, "prune", "--repo", e.repo, "--keep", "2", "--dry-run"); !strings.Contains(out, "would remove commit "+ids[0].String()) {
		t.Errorf("dry-run output does not list the commit:\n%s", out)
	}
	for _, id := range ids {
		checkComplete(t, e.repo, e.trust(t), id)
	}
	rep := decode[repo.PruneReport](t, ok(t, "prune", "--repo", e.repo, "--keep", "2", "--json"))
	if !slices.Equal(rep.Commits, ids[:1]) || rep.BytesFreed <= rep.ObjectBytes || rep.ObjectBytes == 0 {
		t.Errorf("prune: %+v", rep)
	}
	if r := cfs(t, "show", "--repo", e.repo, ids[0].String()); r.code == 0 {
		t.Errorf("pruned commit still shown: %s", r)
	}
	log := ok(t, "log", "--repo", e.repo, "os/x86_64/stable")
	if strings.Count(log, "commit ") != 2 {
		t.Errorf("log after prune --keep 2:\n%s", log)
	}
	e.mustFsckClean(t)
	fails(t, cfs(t, "prune", "--repo", e.repo, "--keep", "0"), 2, "--keep 0")
}

func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, "ed25519")
	trust := e.trust(t)
	tree := filepath.Join(dir, "tree")
	const files, maxSize = 300, 32 << 10
	build := func() *exec.Cmd {
		return command(nil, "build", "--repo", e.repo, "--ref", "os/x86_64/stable", "--key", e.key, "--no-cache", tree)
	}
	// Time a full build (every object new) to spread the kills over; the
	// estimate follows the builds that finish before their kill.
	genTree(t, tree, files, maxSize, 1000)
	start := time.Now()
	if r := runCmd(t, build()); r.code != 0 {
		t.Fatal(r)
	}
	est := time.Since(start)

	rng := rand.New(rand.NewPCG(42, 0))
	const kills = 50
	var mid, done int
	for i := range kills {
		genTree(t, tree, files, maxSize, uint64(i))
		cmd := build()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var err error
		select {
		case err = <-exited:
		case <-time.After(time.Duration(rng.Int64N(int64(est)))):
			cmd.Process.Signal(syscall.SIGKILL)
			err = <-exited
		}
		r := finish(t, cmd, &stdout, &stderr, err)
		switch {
		case r.killed:
			mid++
		case r.code == 0:
			done++
			est = (est + time.Since(start)) / 2
		default:
			t.Fatalf("kill %d: build failed on its own: %s", i, r)
		}
		// The ref always names a complete commit.
		id, ok := readRef(t, e.repo, "os/x86_64/stable")
		if !ok {
			t.Fatalf("kill %d: ref gone", i)
		}
		checkComplete(t, e.repo, trust, id)
	}
	t.Logf("%d builds killed midway, %d finished first (a build takes about %v)", mid, done, est)
	if mid < kills/10 {
		t.Errorf("only %d of %d kills landed mid-build: the test does not exercise what it should", mid, kills)
	}
	rep, code := e.fsck(t)
	if code != 0 || !rep.Clean() {
		t.Fatalf("fsck after the kills: %v", rep.Problems)
	}
	t.Logf("%d leftovers, warnings %v", len(rep.Leftovers), rep.Warnings)

	// The next build succeeds and heals the summary; --repair clears the
	// leftovers.
	genTree(t, tree, files, maxSize, 9999)
	res := e.build(t, "os/x86_64/stable", tree)
	checkComplete(t, e.repo, trust, res.Commit)
	if rep, _ := e.fsck(t, "--repair"); !rep.Clean() || len(rep.Warnings) != 0 {
		t.Fatalf("fsck --repair after a good build: problems %v, warnings %v", rep.Problems, rep.Warnings)
	}
	if rep := e.mustFsckClean(t); len(rep.Leftovers) != 0 {
		t.Errorf("leftovers after --repair: %v", rep.Leftovers)
	}
}

// state is what a failed build must leave unchanged.
type state struct {
	refs    map[string]string
	commits []string
	summary string
}

func snapshot(t testing.TB, repoDir string) state {
	t.Helper()
	s := state{refs: map[string]string{}}
	refs := filepath.Join(repoDir, "refs")
	filepath.Walk(refs, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(refs, p)
			s.refs[rel] = string(b)
		}
		return nil
	})
	ents, err := os.ReadDir(filepath.Join(repoDir, "commits"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		s.commits = append(s.commits, e.Name())
	}
	b, _ := os.ReadFile(filepath.Join(repoDir, "summary"))
	s.summary = string(b)
	return s
}

// unchanged checks that the repository is as snapshotted and fsck finds
// nothing, not even leftovers.
func (e env) unchanged(t testing.TB, before state) {
	t.Helper()
	after := snapshot(t, e.repo)
	if fmt.Sprint(after.refs) != fmt.Sprint(before.refs) || !slices.Equal(after.commits, before.commits) || after.summary != before.summary {
		t.Errorf("repository changed:\nbefore %v %v\nafter  %v %v", before.refs, before.commits, after.refs, after.commits)
	}
	rep := e.mustFsckClean(t)
	if len(rep.Leftovers) != 0 || len(rep.Warnings) != 0 {
		t.Errorf("leftovers %v, warnings %v", rep.Leftovers, rep.Warnings)
	}
}

func writeTar(t testing.TB, path string, entries []tar.Header) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := strings.Repeat("x", int(h.Size))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	// A world-traversable base: one case runs the build as nobody.
	base, err := os.MkdirTemp("", "cfs-e2e-bad-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	e := newEnv(t, base, "ed25519")
	good := filepath.Join(base, "good")
	writeFiles(t, good, map[string]string{"etc/a": strings.Repeat("a", 200), "etc/b": "b"})
	e.build(t, "os/x86_64/stable", good)
	ref := "os/x86_64/stable"
	buildArgs := func(src string) []string {
		return []string{"build", "--repo", e.repo, "--ref", ref, "--key", e.key, src}
	}

	t.Run("dotdot-tar", func(t *testing.T) {
		before := snapshot(t, e.repo)
		tarPath := filepath.Join(base, "dotdot.tar")
		writeTar(t, tarPath, []tar.Header{
			{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "etc/ok", Typeflag: tar.TypeReg, Mode: 0o644, Size: 100},
			{Name: "etc/../../escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: 100},
		})
		fails(t, cfs(t, buildArgs(tarPath)...), exitInvalid, "etc/../../escape", `".."`)
		e.unchanged(t, before)
	})

	t.Run("symlink-escape-tar", func(t *testing.T) {
		before := snapshot(t, e.repo)
		tarPath := filepath.Join(base, "escape.tar")
		writeTar(t, tarPath, []tar.Header{
			{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777},
			{Name: "a/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: 100},
		})
		// Through stdin too.
		f, err := os.Open(tarPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := command(nil, buildArgs("-")...)
		cmd.Stdin = f
		fails(t, runCmd(t, cmd), exitInvalid, "a/passwd", "symlink", "/etc")
		e.unchanged(t, before)
	})

	t.Run("wrong-password", func(t *testing.T) {
		before := snapshot(t, e.repo)
		enc := filepath.Join(base, "enc")
		if r := runCmd(t, command([]string{"CFS_PASSWORD=right"}, "keygen", "--encrypt", enc)); r.code != 0 {
			t.Fatal(r)
		}
		r := runCmd(t, command([]string{"CFS_PASSWORD=wrong"}, "build", "--repo", e.repo, "--ref", ref, "--key", enc+".key", good))
		fails(t, r, 0, "wrong password", enc+".key")
		e.unchanged(t, before)
		// And the right one works (the key is fine).
		if err := os.Rename(enc+".pub", filepath.Join(e.trusted, "enc.pub")); err != nil {
			t.Fatal(err)
		}
		if r := runCmd(t, command([]string{"CFS_PASSWORD=right"}, "build", "--repo", e.repo, "--ref", "os/enc", "--key", enc+".key", good)); r.code != 0 {
			t.Fatal(r)
		}
	})

	t.Run("unreadable-file", func(t *testing.T) {
		testutil.RequireRoot(t)
		tree := filepath.Join(base, "unreadable")
		secret := filepath.Join(tree, "etc/secret")
		writeFiles(t, tree, map[string]string{"etc/readable": strings.Repeat("r", 500), "etc/secret": strings.Repeat("s", 500)})
		if err := os.Chmod(secret, 0); err != nil {
			t.Fatal(err)
		}
		// nobody owns the repository and the key, not the secret.
		const nobody = 65534
		for _, p := range []string{e.repo, e.key} {
			if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", nobody, nobody), p).CombinedOutput(); err != nil {
				t.Fatalf("chown: %v: %s", err, out)
			}
		}
		before := snapshot(t, e.repo)
		cmd := command(nil, buildArgs(tree)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		fails(t, runCmd(t, cmd), 0, secret, "permission denied")
		e.unchanged(t, before)
	})

	t.Run("full-disk", func(t *testing.T) {
		testutil.RequireMountNS(t)
		mkfs := testutil.RequireTool(t, "mkfs.ext4")
		mountTool := testutil.RequireTool(t, "mount")
		img := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v: %s", err, out)
		}
		mnt := t.TempDir()
		if out, err := exec.Command(mountTool, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v: %s", err, out)
		}
		t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
		small := env{repo: filepath.Join(mnt, "repo"), key: e.key, trusted: e.trusted}
		ok(t, "init", "--repo", small.repo)
		small.build(t, ref, good)
		before := snapshot(t, small.repo)

		big := filepath.Join(base, "big")
		genTree(t, big, 40, 600<<10, 7) // about 12 MiB
		fails(t, cfs(t, "build", "--repo", small.repo, "--ref", ref, "--key", small.key, big), 0, "no space left on device", big)
		small.unchanged(t, before)
	})
}

// prune on a sysroot's repository would drop commits that deployments use
// (they have no refs): the CLI refuses and points at cfs-deploy cleanup.
func TestPruneRefusesSysrootRepository(t *testing.T) {
	sys := t.TempDir()
	repoDir := filepath.Join(sys, "cfs", "repo")
	if err := os.MkdirAll(filepath.Join(sys, "cfs", "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(repoDir); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cfsBin, "prune", "--repo", repoDir, "--keep", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cfs-deploy cleanup") {
		t.Fatalf("prune on a sysroot repository: %v %s", err, out)
	}
}
