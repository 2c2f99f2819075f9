package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/internal/cli"
)

// Steps of a plain switch and of its staged halves.
var (
	switchSteps   = without(deploy.Steps, deploy.StepStaged)
	stageSteps    = deploy.Steps[:slices.Index(deploy.Steps, deploy.StepStaged)+1]
	finalizeSteps = deploy.Steps[slices.Index(deploy.Steps, deploy.StepPreSwap):]
	beforeSwap    = map[string]bool{}
)

func init() {
	for _, s := range deploy.Steps {
		if s == deploy.StepEntriesSwapped {
			break
		}
		beforeSwap[s] = true
	}
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

var errInjected = errors.New("injected failure")

// withAB returns a fixture with A deployed and B pulled (not deployed).
func withAB(t *testing.T) (*fixture, commit.ID, commit.ID) {
	t.Helper()
	f := newFixture(t)
	s := f.open()
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	if err := os.WriteFile(filepath.Join(f.root, "cfs/deploy/os/deploy", idA.String()+".0", "etc/local.conf"), []byte("local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := defaultSpec("2.0")
	spec.kernel = 2 // new boot files
	idB := f.build(spec)
	f.pull(s)
	return f, idA, idB
}

// noLeftovers checks that no staging state survived an operation.
func noLeftovers(t *testing.T, root string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(root, "boot/loader/entries.new")); err == nil {
		t.Error("loader/entries.new left behind")
	}
	for _, dir := range []string{"cfs/deploy/os/deploy", "boot/cfs/os"} {
		des, _ := os.ReadDir(filepath.Join(root, dir))
		for _, d := range des {
			if strings.HasPrefix(d.Name(), ".") {
				t.Errorf("staging %s/%s left behind", dir, d.Name())
			}
		}
	}
	if des, _ := os.ReadDir(filepath.Join(root, "cfs/tmp")); len(des) != 0 {
		t.Errorf("scratch files left in cfs/tmp: %d", len(des))
	}
}

// TestSwitchFailureAtEachStep makes each step of a switch fail (through
// Hooks.Step): before the entries swap everything is rolled back exactly;
// after it, B is the default and bootable.
func TestSwitchFailureAtEachStep(t *testing.T) {
	f, idA, idB := withAB(t)
	for _, stage := range []bool{false, true} {
		steps := switchSteps
		if stage {
			steps = stageSteps
		}
		for _, step := range steps {
			if !beforeSwap[step] {
				continue
			}
			opts := f.opts
			opts.Hooks.Step = func(s string) error {
				if s == step {
					return errInjected
				}
				return nil
			}
			s, err := deploy.Open(f.root, opts)
			if err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, f.root)
			_, err = s.Switch(context.Background(), testRef, deploy.SwitchOptions{Stage: stage})
			if !errors.Is(err, errInjected) {
				t.Fatalf("stage=%v step %s: error %v", stage, step, err)
			}
			requireUnchanged(t, before, f.root)
			if bs := checkBootable(t, s, f.root); !reflect.DeepEqual(bs.commits, []string{idA.String()}) {
				t.Errorf("step %s: entries %v", step, bs.commits)
			}
		}
	}
	// A failing PreSwap hook (the TPM sealing seam) changes nothing either;
	// when it runs, the deployment and its boot files are complete.
	opts := f.opts
	var seen *deploy.PreSwap
	opts.Hooks.PreSwap = func(ctx context.Context, p *deploy.PreSwap) error {
		seen = p
		for _, file := range []string{p.Kernel, p.Initramfs, filepath.Join(p.Dir, deploy.ImageFile), filepath.Join(p.Dir, deploy.CommitFile)} {
			if _, err := os.Stat(file); err != nil {
				t.Errorf("pre-swap hook: %v (must exist before the swap)", err)
			}
		}
		if d, _, err := fsverity.DigestFile(ctx, filepath.Join(p.Dir, deploy.ImageFile)); err != nil || d != p.ImageDigest {
			t.Errorf("pre-swap hook: image digest %s, want %s (%v)", d, p.ImageDigest, err)
		}
		return errInjected
	}
	s, _ := deploy.Open(f.root, opts)
	before := snapshot(t, f.root)
	if _, err := s.Switch(context.Background(), testRef, deploy.SwitchOptions{}); !errors.Is(err, errInjected) {
		t.Fatalf("pre-swap hook error: %v", err)
	}
	requireUnchanged(t, before, f.root)
	if seen == nil || seen.Deployment.Commit != idB || seen.ImageDigest != readCommit(t, s.Repo(), idB).Image.Digest ||
		!strings.Contains(seen.Cmdline, "composefs="+seen.ImageDigest.String()) {
		t.Errorf("pre-swap hook saw %+v", seen)
	}

	// After the swap: the switch happened.
	for _, step := range switchSteps {
		if beforeSwap[step] {
			continue
		}
		t.Run(step, func(t *testing.T) {
			f, idA, idB := withAB(t)
			opts := f.opts
			opts.Hooks.Step = func(s string) error {
				if s == step {
					return errInjected
				}
				return nil
			}
			s, _ := deploy.Open(f.root, opts)
			if _, err := s.Switch(context.Background(), testRef, deploy.SwitchOptions{}); !errors.Is(err, errInjected) {
				t.Fatalf("error %v", err)
			}
			if bs := checkBootable(t, s, f.root); !reflect.DeepEqual(bs.commits, []string{idB.String(), idA.String()}) {
				t.Errorf("entries %v, want B then A", bs.commits)
			}
			// The next operation cleans up after it.
			if _, err := f.open().Cleanup(context.Background(), deploy.CleanupOptions{}); err != nil {
				t.Fatal(err)
			}
			noLeftovers(t, f.root)
		})
	}
}

type cliRun struct {
	ps  *os.ProcessState
	out string
}

// runCLI runs cfs-deploy (this test binary in helper mode) and returns
// its exit status and output.
func runCLI(t *testing.T, crashAt string, args ...string) cliRun {
	t.Helper()
	b, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CFS_DEPLOY_TEST_CLI="+string(b))
	if crashAt != "" {
		cmd.Env = append(cmd.Env, cli.CrashEnv+"="+crashAt)
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run cfs-deploy %v: %v", args, err)
	}
	return cliRun{cmd.ProcessState, string(out)}
}

func requireKilled(t *testing.T, r cliRun) {
	t.Helper()
	ws, ok := r.ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("cfs-deploy was not killed at the step (%v): %s", r.ps, r.out)
	}
}

func requireSuccess(t *testing.T, r cliRun) {
	t.Helper()
	if !r.ps.Success() {
		t.Fatalf("cfs-deploy failed (%v): %s", r.ps, r.out)
	}
}

// TestCrashSafety kills `cfs-deploy switch` (and `switch --stage`, and
// `finalize`) with SIGKILL at each step. Afterwards there is exactly one
// valid default entry pointing at a complete deployment — A before the
// swap, B after it — and a later switch succeeds and leaves no staging
// state behind.
func TestCrashSafety(t *testing.T) {
	f, idA, idB := withAB(t)
	template := f.root
	fresh := func(t *testing.T) string {
		root := filepath.Join(t.TempDir(), "sysroot")
		copyTree(t, template, root)
		return root
	}
	check := func(t *testing.T, root string, want ...commit.ID) {
		t.Helper()
		s, err := deploy.Open(root, deploy.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bs := checkBootable(t, s, root)
		var ids []string
		for _, id := range want {
			ids = append(ids, id.String())
		}
		if !reflect.DeepEqual(bs.commits, ids) {
			t.Errorf("entries after the crash: %v, want %v", bs.commits, ids)
		}
	}
	laterSwitch := func(t *testing.T, root string) {
		t.Helper()
		requireSuccess(t, runCLI(t, "", "--sysroot", root, "switch", "--json", testRef))
		s, _ := deploy.Open(root, deploy.OpenOptions{})
		if bs := checkBootable(t, s, root); bs.commits[0] != idB.String() {
			t.Errorf("default after the later switch: %v", bs.commits)
		}
		noLeftovers(t, root)
	}

	for _, step := range switchSteps {
		t.Run("switch/"+step, func(t *testing.T) {
			root := fresh(t)
			requireKilled(t, runCLI(t, step, "--sysroot", root, "switch", testRef))
			if beforeSwap[step] {
				check(t, root, idA)
			} else {
				check(t, root, idB, idA)
			}
			laterSwitch(t, root)
		})
	}
	for _, step := range stageSteps {
		t.Run("stage/"+step, func(t *testing.T) {
			root := fresh(t)
			requireKilled(t, runCLI(t, step, "--sysroot", root, "switch", "--stage", testRef))
			check(t, root, idA)
			laterSwitch(t, root)
		})
	}
	staged := filepath.Join(t.TempDir(), "staged")
	copyTree(t, template, staged)
	requireSuccess(t, runCLI(t, "", "--sysroot", staged, "switch", "--stage", testRef))
	for _, step := range finalizeSteps {
		t.Run("finalize/"+step, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "sysroot")
			copyTree(t, staged, root)
			requireKilled(t, runCLI(t, step, "--sysroot", root, "finalize"))
			if beforeSwap[step] {
				check(t, root, idA)
				// The staged deployment is still there to finalize.
				requireSuccess(t, runCLI(t, "", "--sysroot", root, "finalize"))
			} else {
				check(t, root, idB, idA)
			}
			check(t, root, idB, idA)
			laterSwitch(t, root)
		})
	}
}

// TestFirstSwitchFailureLeavesNothing: the very first switch of a sysroot
// creates the boot directories; failing late must remove them too, so the
// sysroot is exactly as init left it.
func TestFirstSwitchFailureLeavesNothing(t *testing.T) {
	f := newFixture(t)
	f.build(defaultSpec("1"))
	s0 := f.open()
	f.pull(s0)
	opts := f.opts
	opts.Hooks.Step = func(s string) error {
		if s == deploy.StepEntryWritten {
			return errInjected
		}
		return nil
	}
	s, err := deploy.Open(f.root, opts)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.root)
	if _, err := s.Switch(context.Background(), testRef, deploy.SwitchOptions{}); !errors.Is(err, errInjected) {
		t.Fatalf("switch: %v", err)
	}
	requireUnchanged(t, before, f.root)
}
