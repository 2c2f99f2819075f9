//go:build vm

package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRollback: UEFI (OVMF) with systemd-boot and boot counting. The
// newest deployment ("bad") never completes its boot (its init powers off
// before boot-complete); systemd-boot tries it the configured number of
// times (cfs-deploy writes +3), then falls back to the previous deployment
// ("good"), which completes, is blessed by systemd-bless-boot and keeps
// its place on the next boot.
func TestRollback(t *testing.T) {
	fx := getFixture(t)
	dir := testDir(t)
	root, esp, vars := filepath.Join(dir, "root.img"), filepath.Join(dir, "esp.img"), filepath.Join(dir, "vars.fd")
	for src, dst := range map[string]string{fx.UEFIDisk: root, fx.ESP: esp, ovmfVars: vars} {
		if err := copyFile(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	good, bad := fx.UEFI["good"], fx.UEFI["bad"]
	goodBase, badBase := entryBase(good.Entry), entryBase(bad.Entry)
	if got, want := espEntries(t, esp), []string{goodBase + "+3.conf", badBase + "+3.conf"}; !slices.Equal(got, sortedCopy(want)) {
		t.Fatalf("ESP entries before the first boot: %v, want %v", got, want)
	}

	steps := []struct {
		boots   *deployment
		entries []string // on the ESP after the boot
	}{
		{bad, []string{goodBase + "+3.conf", badBase + "+2-1.conf"}},
		{bad, []string{goodBase + "+3.conf", badBase + "+1-2.conf"}},
		{bad, []string{goodBase + "+3.conf", badBase + "+0-3.conf"}},
		{good, []string{goodBase + ".conf", badBase + "+0-3.conf"}}, // fallback, blessed
		{good, []string{goodBase + ".conf", badBase + "+0-3.conf"}}, // keeps its place
	}
	for i, s := range steps {
		res := boot(t, machine{name: fmt.Sprintf("rollback-%d", i+1), vars: vars, disks: []string{esp, root}, stopOn: stopRE})
		g := requireGuest(t, res)
		checkBootedAs(t, g, s.boots)
		got := espEntries(t, esp)
		t.Logf("boot %d: %s (mode %s), %.1fs; ESP entries now %v", i+1, s.boots.Name, g.mode, res.elapsed.Seconds(), got)
		if !slices.Equal(got, sortedCopy(s.entries)) {
			t.Fatalf("after boot %d: ESP entries %v, want %v; serial log %s", i+1, got, s.entries, res.logPath)
		}
		switch {
		case s.boots == bad:
			if _, ok := res.guestLine("not-completing"); !ok {
				t.Errorf("boot %d: the bad deployment's init did not stop before boot-complete", i+1)
			}
		case i == 3:
			if l, _ := res.guestLine("bless-boot good exit="); l != "bless-boot good exit=0" {
				t.Errorf("boot %d: systemd-bless-boot good: %q; serial log %s", i+1, l, res.logPath)
			}
		case i == 4:
			if _, ok := res.guestLine("bless-boot skipped: no LoaderBootCountPath"); !ok {
				t.Errorf("boot %d: the blessed entry still has a boot counter; serial log %s", i+1, res.logPath)
			}
		}
		if s.boots == good {
			if _, ok := res.guestLine("boot-complete"); !ok {
				t.Errorf("boot %d: the good deployment did not complete its boot", i+1)
			}
		}
	}
	checkUEFIStatus(t, fx, esp, good, bad)
}

// checkUEFIStatus runs cfs-deploy status --json on the UEFI sysroot with
// the ESP's final entries (in a private mount namespace, a tmpfs over its
// boot/ filled from the ESP image): good is the blessed default, bad is
// marked bad after 3 tries.
func checkUEFIStatus(t *testing.T, fx *fixture, esp string, good, bad *deployment) {
	t.Helper()
	script := `set -euo pipefail
mount -t tmpfs cfsvm-esp "$1/boot"
MTOOLS_SKIP_CHECK=1 mcopy -s -n -i "$2" ::/loader "$1/boot/"
"$3" --sysroot "$1" status --json`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, "", nil, "unshare", "-m", "--propagation", "private", "bash", "-c", script, "status",
		fx.UEFISysroot, esp, filepath.Join(fx.Bin, "cfs-deploy"))
	if err != nil {
		t.Fatal(err)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	found := 0
	for _, d := range st.Deployments {
		if d.BootCounter == nil {
			t.Errorf("status: %s has no boot counter state", d.Deployment)
			continue
		}
		switch d.Deployment {
		case good.Deployment:
			found++
			if !d.Default || d.BootCounter.State != "blessed" {
				t.Errorf("status of good: default %v, boot counter %+v; want the blessed default", d.Default, *d.BootCounter)
			}
		case bad.Deployment:
			found++
			if d.Default || d.BootCounter.State != "bad" || d.BootCounter.TriesDone != 3 {
				t.Errorf("status of bad: default %v, boot counter %+v; want bad after 3 tries", d.Default, *d.BootCounter)
			}
		}
	}
	if found != 2 {
		t.Errorf("status --json lists %d of the 2 deployments:\n%s", found, out)
	}
}

// entryBase is "cfs-N" of "cfs-N+3.conf".
func entryBase(entry string) string {
	b := strings.TrimSuffix(entry, ".conf")
	if i := strings.IndexByte(b, '+'); i >= 0 {
		b = b[:i]
	}
	return b
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
