//go:build vm

// Package vm boots the cfs chain end to end under QEMU (software
// emulation) with a swtpm vTPM: a signed commit of a small OS tree (the
// 6.12 cloud kernel and its modules, the static guest init of
// tests/vm/guestinit), deployed with cfs-deploy on an ext4 root with
// fs-verity, an initramfs built by dracut with the cfs dracut module, and
// systemd-boot under OVMF for boot counting. Each test is one or more
// boots, checked from the serial log and the disk images afterwards.
//
// Run with `make test-vm` (installs the Debian packages first), or
// `go test -tags vm -v ./tests/vm/` as root. CFS_VM_REUSE=1 reuses the
// fixture (trees, initramfs, commits, disk templates) of an earlier run
// under /var/tmp/cfs-vm.
package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	start := time.Now()
	// The serial logs of this run only.
	os.RemoveAll(filepath.Join(workDir, "logs"))
	code := m.Run()
	// Every process the tests started must be gone.
	if left := leftoverProcs(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: processes started by the VM tests still running:\n%s\n", strings.Join(left, "\n"))
		code = 1
	}
	fmt.Fprintf(os.Stderr, "VM tests: %.1fs in all\n", time.Since(start).Seconds())
	os.Exit(code)
}

// testDir returns an empty per-test directory under workDir, removed at
// the end unless the test failed (its disks and TPM state are then kept
// for a look).
func testDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(workDir, "tests", strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s", dir)
		}
	})
	return dir
}

// mainCopy is a test's own copy of the main root disk and its vTPM state.
type mainCopy struct {
	disk, tpm string
}

func copyMain(t *testing.T, fx *fixture) mainCopy {
	t.Helper()
	dir := testDir(t)
	c := mainCopy{disk: filepath.Join(dir, "main.img"), tpm: filepath.Join(dir, "tpm")}
	if err := copyFile(fx.MainDisk, c.disk); err != nil {
		t.Fatal(err)
	}
	if err := copyDir(fx.MainTPM, c.tpm); err != nil {
		t.Fatal(err)
	}
	return c
}

// directBoot is a SeaBIOS direct kernel boot of a deployment with the
// command line of its boot entry, as a boot loader would start it.
func directBoot(name string, d *deployment, disk, tpm string) machine {
	return machine{name: name, kernel: d.Kernel, initrd: d.Initrd, append: d.Options,
		disks: []string{disk}, tpmState: tpm, stopOn: stopRE}
}

// stopRE ends a boot that will not power off by itself: the initrd's
// emergency shell, a kernel panic.
var stopRE = regexp.MustCompile(`Reached target .*emergency\.target|Entering emergency mode|Kernel panic|root account is locked`)
