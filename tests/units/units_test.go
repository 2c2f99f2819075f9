// Package units checks the systemd units cfs ships with systemd-analyze.
package units

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// TestUnitsVerify runs `systemd-analyze verify` on every unit in systemd/,
// with the cfs binaries they run installed (built) into a temporary
// directory the unit files are rewritten to point at.
func TestUnitsVerify(t *testing.T) {
	analyze := testutil.RequireTool(t, "systemd-analyze")
	root := testutil.RepoRoot(t)
	bin := t.TempDir()
	out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/cfs-dev/cfs/cmd/cfs-deploy").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	units, err := filepath.Glob(filepath.Join(root, "systemd", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in systemd/: %v", err)
	}
	dir := t.TempDir()
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/cfs-deploy", filepath.Join(bin, "cfs-deploy"))
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...)
	out, err = cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
