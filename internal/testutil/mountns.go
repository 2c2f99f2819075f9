package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// mountNSEnv marks a test process already re-executed in a private mount
// namespace.
const mountNSEnv = "CFS_TEST_IN_MOUNTNS"

// RunInMountNS runs the tests of a package inside a private mount
// namespace, so that the mounts they make never leak into the host: as
// root, it re-executes the test binary under `unshare -m --propagation
// private` and returns its exit code; otherwise (or when already inside)
// it just runs the tests, and those needing root skip or fail through
// RequireRoot. Use it from TestMain: os.Exit(testutil.RunInMountNS(m)).
func RunInMountNS(m interface{ Run() int }) int {
	if os.Geteuid() != 0 || os.Getenv(mountNSEnv) == "1" {
		return m.Run()
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testutil: unshare(1) not found; mount tests will fail or skip:", err)
		return m.Run()
	}
	args := append([]string{"-m", "--propagation", "private", os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), mountNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "testutil: running tests in a private mount namespace:", err)
		return 1
	}
	return 0
}

// InMountNS reports whether this process runs in the private mount
// namespace RunInMountNS set up. Tests that mount call RequireMountNS.
func InMountNS() bool { return os.Getenv(mountNSEnv) == "1" }

// RequireMountNS skips (fails in strict mode) unless running as root in a
// private mount namespace.
func RequireMountNS(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if !InMountNS() {
		Skip(t, "test mounts filesystems and must run in a private mount namespace (TestMain must call testutil.RunInMountNS)")
	}
}

// MountPoints returns the mount points of this process's mount namespace
// in /proc/self/mountinfo order (octal escapes such as \040 decoded).
// Tests compare it before and after to prove nothing was left mounted.
func MountPoints(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			t.Fatalf("mountinfo line %q", line)
		}
		out = append(out, unescapeMountinfo(f[4]))
	}
	return out
}

// IsMountPoint reports whether dir is a mount point in this namespace.
func IsMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	return slices.Contains(MountPoints(t), dir)
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
