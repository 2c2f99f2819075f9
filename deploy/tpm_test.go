package deploy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/internal/cli"
	"github.com/cfs-dev/cfs/internal/testutil"
	"github.com/cfs-dev/cfs/tpm"
)

// --- swtpm on loopback, one per test (the pattern of tpm/swtpm_test.go) ---

type swtpm struct{ *testutil.SWTPM }

func startSWTPM(t *testing.T) *swtpm {
	t.Helper()
	return &swtpm{testutil.StartSWTPM(t, "", true)}
}

func (s *swtpm) uri() string { return s.URI() }

// with runs f on a fresh connection, closed afterwards: swtpm serves one
// client at a time, and the CLI under test opens its own.
func (s *swtpm) with(t *testing.T, f func(transport.TPM)) {
	t.Helper()
	c, err := tpm.Open(s.uri())
	if err != nil {
		t.Fatalf("open %s: %v", s.uri(), err)
	}
	defer c.Close()
	f(c)
}

// tool runs a tpm2-tools command against this swtpm.
func (s *swtpm) tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	return s.Tool(t, name, args...)
}

// --- helpers ---

// deployCLI runs cfs-deploy in-process.
func deployCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := cli.NewDeployCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	root.SilenceUsage, root.SilenceErrors = true, true
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := deployCLI(t, args...)
	if err != nil {
		t.Fatalf("cfs-deploy %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// buildRI builds spec with a signed rollback index and pulls it.
func (f *fixture) buildRI(s *deploy.Sysroot, spec treeSpec, ri uint64) commit.ID {
	f.t.Helper()
	dir := f.t.TempDir()
	writeTree(f.t, dir, spec)
	f.ts++
	res, err := builder.Build(context.Background(), f.src, builder.Source{Dir: dir}, builder.Options{
		Ref: testRef, Subject: "test " + spec.version, Version: spec.version, Timestamp: f.ts,
		RollbackIndex: &ri, Signers: []*sign.Signer{f.signer},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.pull(s)
	return res.Commit
}

func blobPath(f *fixture, path string) string {
	return filepath.Join(f.deployDir(path), deploy.TPMBlobFile)
}

// unsealDeployment runs tpm.Unseal on a deployment's blob with the
// expectation from its commit.
func unsealDeployment(t *testing.T, tp *swtpm, f *fixture, path string) (*tpm.SealedPayload, error) {
	t.Helper()
	ts, err := deploy.LoadTPM(f.root)
	if err != nil || ts == nil {
		t.Fatalf("load tpm: %v %v", ts, err)
	}
	d, err := deploy.ParseDeploymentPath(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := commit.Parse([]byte(fileContent(t, filepath.Join(f.deployDir(path), deploy.CommitFile))))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(blobPath(f, path))
	if err != nil {
		t.Fatal(err)
	}
	var p *tpm.SealedPayload
	tp.with(t, func(c transport.TPM) {
		p, err = tpm.Unseal(c, ts.Enrollment, blob, tpm.Expectation{ImageDigest: m.Image.Digest, CommitID: d.Commit, RollbackIndex: m.RollbackIndex})
	})
	return p, err
}

func requireUnseals(t *testing.T, tp *swtpm, f *fixture, path string) {
	t.Helper()
	p, err := unsealDeployment(t, tp, f, path)
	if err != nil {
		t.Fatalf("unseal %s: %v", path, err)
	}
	d, _ := deploy.ParseDeploymentPath(path)
	m := readCommit(t, f.open().Repo(), d.Commit)
	if p.ImageDigest != m.Image.Digest || p.CommitID != d.Commit || p.RollbackIndex != m.RollbackIndex {
		t.Fatalf("unsealed %x/%x/%d, want %s/%s/%d", p.ImageDigest, p.CommitID, p.RollbackIndex, m.Image.Digest, d.Commit, m.RollbackIndex)
	}
}

func defaultDeployment(t *testing.T, f *fixture) string {
	t.Helper()
	for _, d := range f.status(f.open()).Deployments {
		if d.Default {
			return d.Deployment
		}
	}
	t.Fatal("no default deployment")
	return ""
}

// --- tests ---

// TestTPMSwitchSealsCheckBless is the life cycle: enroll, switch A
// (sealed before its entry), check, unseal, interrupted switches (error at
// entry-written in-process, SIGKILL at entry-written in a child process)
// that leave A default and unsealable, switch B (A's blob kept), bless
// (cross-checked with tpm2_nvread), status, the latched check after a PCR
// 15 measurement, and a PCR 7 change reported by number.
func TestTPMSwitchSealsCheckBless(t *testing.T) {
	f := newFixture(t)
	tp := startSWTPM(t)
	g := []string{"--sysroot", f.root, "--tpm", tp.uri()}
	cmd := func(args ...string) []string { return append(append([]string{}, g...), args...) }

	out := mustCLI(t, cmd("tpm", "enroll")...)
	if !strings.Contains(out, "mode required") {
		t.Errorf("enroll output: %s", out)
	}
	if st, err := os.Stat(filepath.Join(f.root, deploy.TPMPolicyKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("policy key: %v %v", st, err)
	}
	cfg, err := deploy.ParseTPMConfig([]byte(fileContent(t, filepath.Join(f.root, deploy.TPMConfigFile))))
	if err != nil || cfg.Mode != "required" || len(cfg.PCRs) != 1 || cfg.PCRs[0] != 7 || cfg.MeasurePCR != 15 {
		t.Fatalf("config %+v %v", cfg, err)
	}

	s := f.open()
	idA := f.buildRI(s, defaultSpec("1.0"), 1)
	mustCLI(t, cmd("switch", testRef)...)
	pathA := defaultDeployment(t, f)
	if !strings.Contains(pathA, idA.String()) {
		t.Fatalf("default %s, want A %s", pathA, idA)
	}
	out = mustCLI(t, cmd("tpm", "check")...)
	if !strings.Contains(out, "will unseal at boot") {
		t.Fatalf("check: %s", out)
	}
	requireUnseals(t, tp, f, pathA)
	blobA := fileContent(t, blobPath(f, pathA))

	// Interrupted after PreSwap sealed B, in process: nothing changes.
	f.buildRI(s, defaultSpec("2.0"), 2)
	ts, err := deploy.LoadTPM(f.root)
	if err != nil {
		t.Fatal(err)
	}
	var sealedB string
	tp.with(t, func(c transport.TPM) {
		seal := ts.PreSwapHook(c)
		si, err := deploy.Open(f.root, deploy.OpenOptions{Hooks: deploy.Hooks{
			PreSwap: func(ctx context.Context, p *deploy.PreSwap) error {
				err := seal(ctx, p)
				if _, serr := os.Stat(filepath.Join(p.Dir, deploy.TPMBlobFile)); serr == nil {
					sealedB = p.Dir
				}
				return err
			},
			Step: func(step string) error {
				if step == deploy.StepEntryWritten {
					return errors.New("injected")
				}
				return nil
			},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := si.Switch(context.Background(), testRef, deploy.SwitchOptions{}); err == nil {
			t.Fatal("switch with an error at entry-written succeeded")
		}
	})
	if sealedB == "" {
		t.Fatal("PreSwap did not write B's blob before the entry")
	}
	if _, err := os.Stat(sealedB); err == nil {
		t.Errorf("failed switch left %s", sealedB)
	}
	if got := defaultDeployment(t, f); got != pathA {
		t.Fatalf("default after failed switch %s, want %s", got, pathA)
	}
	requireUnseals(t, tp, f, pathA)

	// Killed at entry-written (PreSwap done): A stays the default.
	r := runCLI(t, deploy.StepEntryWritten, cmd("switch", testRef)...)
	requireKilled(t, r)
	if got := defaultDeployment(t, f); got != pathA {
		t.Fatalf("default after killed switch %s, want %s", got, pathA)
	}
	checkBootable(t, f.open(), f.root)
	requireUnseals(t, tp, f, pathA)
	if fileContent(t, blobPath(f, pathA)) != blobA {
		t.Error("A's blob changed")
	}

	// Switch B for real: B sealed, A's blob kept.
	mustCLI(t, cmd("switch", testRef)...)
	pathB := defaultDeployment(t, f)
	if pathB == pathA {
		t.Fatal("B is not the default")
	}
	requireUnseals(t, tp, f, pathB)
	if fileContent(t, blobPath(f, pathA)) != blobA {
		t.Error("A's blob changed by the switch to B")
	}
	requireUnseals(t, tp, f, pathA)

	// Bless raises the counter to B's index; tpm2_nvread agrees.
	out = mustCLI(t, cmd("tpm", "bless", "--json")...)
	var bless deploy.TPMBlessResult
	if err := json.Unmarshal([]byte(out), &bless); err != nil {
		t.Fatal(err)
	}
	if bless.Counter != 2 || bless.RollbackIndex != 2 || bless.Deployment != pathB {
		t.Fatalf("bless: %+v", bless)
	}
	idx := fmt.Sprintf("0x%08x", ts.Enrollment.NVIndex)
	raw := tp.tool(t, "tpm2_nvread", idx, "-C", idx, "-s", "8")
	if len(raw) != 8 || binary.BigEndian.Uint64([]byte(raw))-ts.Enrollment.CounterBase != 2 {
		t.Fatalf("tpm2_nvread raw %x, base %d: want index 2", raw, ts.Enrollment.CounterBase)
	}
	// A (index 1) is now below the counter: check refuses it by reason.
	_, _, err = deployCLI(t, cmd("tpm", "check", "1")...)
	wantErr(t, err, deploy.ErrVerification, tpm.ErrRollback)

	// status --json: the tpm object, the rest of the schema intact.
	out = mustCLI(t, cmd("--cmdline", "cfs.deployment="+pathB, "status", "--json")...)
	var st struct {
		Deployments []map[string]any `json:"deployments"`
		TPM         map[string]any   `json:"tpm"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	mB := readCommit(t, f.open().Repo(), mustParsePath(t, pathB).Commit)
	if st.TPM["mode"] != "required" || st.TPM["enrolled"] != true || st.TPM["measure-pcr"] != float64(15) ||
		st.TPM["counter"] != float64(2) || st.TPM["booted-digest"] != mB.Image.Digest.String() ||
		st.TPM["measured-pcr-value"] != strings.Repeat("0", 64) {
		t.Errorf("status tpm: %v", st.TPM)
	}
	if len(st.Deployments) != 2 || st.Deployments[0]["booted"] != true || st.Deployments[0]["signature"] == nil {
		t.Errorf("status deployments: %v", st.Deployments)
	}

	// After the measurement (the latch), check evaluates PCR 15's boot
	// value and says so; a real unseal is refused.
	tp.with(t, func(c transport.TPM) {
		ev, err := tpm.RootEvent("sha256", mB.Image.Digest, mustParsePath(t, pathB).Commit, "k")
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.Measure(c, 15, ev, ""); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := unsealDeployment(t, tp, f, pathB); !errors.Is(err, tpm.ErrPCRMismatch) {
		t.Fatalf("unseal after the latch: %v", err)
	}
	out = mustCLI(t, cmd("tpm", "check")...)
	if !strings.Contains(out, "would unseal at boot (PCR 15 latched now)") {
		t.Fatalf("latched check: %s", out)
	}

	// PCR 7 changes (a dbx update): check names PCR 7.
	tp.tool(t, "tpm2_pcrextend", "7:sha256="+strings.Repeat("ab", 32))
	out, _, err = deployCLI(t, cmd("tpm", "check")...)
	wantErr(t, err, deploy.ErrVerification, tpm.ErrPCRMismatch)
	var pm *tpm.PCRMismatchError
	if !errors.As(err, &pm) || len(pm.Mismatches) != 1 || pm.Mismatches[0].PCR != 7 {
		t.Fatalf("check after PCR 7 extend: %v", err)
	}
	if !strings.Contains(out, "will NOT unseal") || !strings.Contains(out, "PCR 7 ") {
		t.Errorf("check output: %s", out)
	}
	// reseal re-creates B's blob for the new PCR 7; check passes again.
	mustCLI(t, cmd("tpm", "reseal")...)
	out = mustCLI(t, cmd("tpm", "check")...)
	if !strings.Contains(out, "would unseal at boot (PCR 15 latched now)") {
		t.Fatalf("check after reseal: %s", out)
	}
}

func mustParsePath(t *testing.T, p string) deploy.Deployment {
	t.Helper()
	d, err := deploy.ParseDeploymentPath(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestTPMNoTPM: with the TPM unreachable, if-present switches without
// sealing and says so; required refuses and changes nothing.
func TestTPMNoTPM(t *testing.T) {
	for _, mode := range []string{"if-present", "required"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t)
			tp := startSWTPM(t)
			mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "tpm", "enroll", "--mode", mode)
			s := f.open()
			f.buildRI(s, defaultSpec("1.0"), 0)
			mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "switch", testRef)
			pathA := defaultDeployment(t, f)
			f.buildRI(s, defaultSpec("2.0"), 0)
			port, err := testutil.FreePortPair()
			if err != nil {
				t.Fatal(err)
			}
			closed := fmt.Sprintf("swtpm:127.0.0.1:%d", port)
			before := snapshot(t, f.root)
			_, errOut, err := deployCLI(t, "--sysroot", f.root, "--tpm", closed, "switch", testRef)
			if mode == "required" {
				wantErr(t, err, tpm.ErrNoTPM)
				requireUnchanged(t, before, f.root)
				requireUnseals(t, tp, f, pathA)
				return
			}
			if err != nil {
				t.Fatalf("if-present switch without TPM: %v", err)
			}
			if !strings.Contains(errOut, "NOT sealed") || !strings.Contains(errOut, "signatures only") {
				t.Errorf("stderr does not say so: %q", errOut)
			}
			p := defaultDeployment(t, f)
			if p == pathA {
				t.Fatal("the switch did not make B the default")
			}
			if _, err := os.Stat(blobPath(f, p)); err == nil {
				t.Error("a blob was written without a TPM")
			}
			checkBootable(t, f.open(), f.root)
		})
	}
}

// TestTPMEnrollSealsDefault: enrolling a sysroot that already has a
// default deployment seals it right away, so the next boot can unseal;
// tpm status reports it.
func TestTPMEnrollSealsDefault(t *testing.T) {
	f := newFixture(t)
	tp := startSWTPM(t)
	s := f.open()
	f.buildRI(s, defaultSpec("1.0"), 3)
	mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "switch", testRef)
	pathA := defaultDeployment(t, f)
	if _, err := os.Stat(blobPath(f, pathA)); err == nil {
		t.Fatal("sealed before enrollment")
	}
	out := mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "tpm", "enroll", "--mode", "if-present", "--json")
	var res deploy.TPMEnrollResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Sealed) != 1 || res.Sealed[0] != pathA || res.Mode != "if-present" {
		t.Fatalf("enroll: %+v", res)
	}
	requireUnseals(t, tp, f, pathA)
	out = mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "tpm", "status", "--json")
	var st deploy.TPMStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Enrolled || !st.Reachable || st.Counter == nil || *st.Counter != 0 || len(st.Sealed) != 1 || st.Sealed[0] != pathA {
		t.Fatalf("tpm status: %s", out)
	}
	// Re-enrolling keeps the policy key and the counter.
	key := fileContent(t, filepath.Join(f.root, deploy.TPMPolicyKeyFile))
	out = mustCLI(t, "--sysroot", f.root, "--tpm", tp.uri(), "tpm", "enroll", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Reenrolled || fileContent(t, filepath.Join(f.root, deploy.TPMPolicyKeyFile)) != key {
		t.Errorf("re-enroll replaced the policy key: %+v", res)
	}
	requireUnseals(t, tp, f, pathA)
}
