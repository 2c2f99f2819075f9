package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// runDeploy runs cfs-deploy in-process and returns stdout and the exit
// code it would have.
func runDeploy(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := NewDeployCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := executeDeploy(root)
	if err != nil {
		t.Logf("cfs-deploy %v: %v", args, err)
	}
	return out.String(), deployExitCode(err)
}

// buildCommit builds a small bootable tree into r on ref.
func buildCommit(t *testing.T, r *repo.Repo, ref, version string, signer *sign.Signer) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"usr/lib/modules/6.1.0/vmlinuz":       strings.Repeat("kernel ", 200),
		"usr/lib/modules/6.1.0/initramfs.img": strings.Repeat("initramfs ", 200),
		"usr/bin/app":                         strings.Repeat("app "+version+" ", 30),
		"usr/etc/app.conf":                    "version=" + version + "\n",
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := builder.Build(context.Background(), r, builder.Source{Dir: dir}, builder.Options{
		Ref: ref, Version: version, Timestamp: 1700000000, Signers: []*sign.Signer{signer},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeployCLI(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	priv, pub, err := sign.Keygen("", nil)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sign.ParseSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o755)
	os.WriteFile(filepath.Join(keys, "k.pub"), pub, 0o644)
	src, err := repo.Init(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	sysroot := filepath.Join(dir, "sysroot")
	S := []string{"--sysroot", sysroot}
	with := func(args ...string) []string { return append(append([]string{args[0]}, S...), args[1:]...) }

	if _, code := runDeploy(t, with("init", "--trusted-keys", keys)...); code != ExitUsage {
		t.Errorf("init without --stateroot: exit %d", code)
	}
	if _, code := runDeploy(t, with("init", "--stateroot", "os", "--trusted-keys", keys)...); code != ExitOK {
		t.Fatalf("init: exit %d", code)
	}

	buildCommit(t, src, "os/stable", "1.0", signer)
	out, code := runDeploy(t, with("pull", "--json", src.Path(), "os/stable")...)
	if code != ExitOK {
		t.Fatalf("pull: exit %d", code)
	}
	var pr struct {
		Ref     string `json:"ref"`
		Fetched int    `json:"fetched"`
	}
	if err := json.Unmarshal([]byte(out), &pr); err != nil || pr.Ref != "os/stable" || pr.Fetched == 0 {
		t.Fatalf("pull --json: %q %v", out, err)
	}
	out, code = runDeploy(t, with("switch", "--json", "--karg", "root=UUID=1", "os/stable")...)
	var sr deploy.SwitchResult
	if code != ExitOK || json.Unmarshal([]byte(out), &sr) != nil || sr.Entry != "cfs-0+3.conf" || !strings.HasPrefix(sr.Options, "root=UUID=1 composefs=") {
		t.Fatalf("switch: exit %d, %q", code, out)
	}

	buildCommit(t, src, "os/stable", "2.0", signer)
	if _, code := runDeploy(t, with("pull", src.Path(), "os/stable")...); code != ExitOK {
		t.Fatal("pull 2.0")
	}
	if out, code := runDeploy(t, with("upgrade")...); code != ExitOK || !strings.Contains(out, "deployed os") {
		t.Fatalf("upgrade: exit %d, %q", code, out)
	}
	if out, code := runDeploy(t, with("upgrade")...); code != ExitOK || !strings.Contains(out, "already") {
		t.Fatalf("second upgrade: exit %d, %q", code, out)
	}

	out, code = runDeploy(t, with("status", "--json")...)
	var st deploy.Status
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || len(st.Deployments) != 2 || st.Deployments[0].Version != "2.0" || !st.Deployments[1].Rollback {
		t.Fatalf("status --json: exit %d, %q", code, out)
	}
	if out, _ := runDeploy(t, with("status")...); !strings.Contains(out, "(default)") || !strings.Contains(out, "(rollback)") || !strings.Contains(out, "Version: 2.0") {
		t.Errorf("status: %q", out)
	}

	if out, code := runDeploy(t, with("rollback", "--json")...); code != ExitOK || !strings.Contains(out, `"default"`) {
		t.Fatalf("rollback: exit %d, %q", code, out)
	}
	if _, code := runDeploy(t, with("pin", "x")...); code != ExitUsage {
		t.Errorf("pin x: exit %d", code)
	}
	if _, code := runDeploy(t, with("pin", "1")...); code != ExitOK {
		t.Errorf("pin 1: exit %d", code)
	}
	out, _ = runDeploy(t, with("status", "--json")...)
	json.Unmarshal([]byte(out), &st)
	if st.Deployments[0].Version != "1.0" || !st.Deployments[1].Pinned {
		t.Errorf("after rollback and pin: %+v", st.Deployments)
	}
	if _, code := runDeploy(t, with("unpin", "1")...); code != ExitOK {
		t.Errorf("unpin: exit %d", code)
	}
	if out, code := runDeploy(t, with("cleanup", "--json")...); code != ExitOK || !strings.Contains(out, `"removed-objects"`) {
		t.Errorf("cleanup: exit %d, %q", code, out)
	}

	// A verification refusal exits with ExitVerify.
	other, _, _ := sign.Keygen("", nil)
	otherSigner, _ := sign.ParseSigner(other, nil)
	sysRepo, _ := repo.Open(filepath.Join(sysroot, deploy.RepoDir))
	buildCommit(t, sysRepo, "os/evil", "6.6.6", otherSigner)
	if _, code := runDeploy(t, with("switch", "os/evil")...); code != ExitVerify {
		t.Errorf("switch to an untrusted commit: exit %d, want %d", code, ExitVerify)
	}
	if _, code := runDeploy(t, with("finalize")...); code != ExitFailure {
		t.Errorf("finalize with nothing staged: exit %d", code)
	}
}
