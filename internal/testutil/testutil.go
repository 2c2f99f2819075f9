// Package testutil holds helpers shared by cfs tests: gates for root and
// external tools that turn into failures under CI, and the location of the
// shared golden data.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Strict reports whether a missing prerequisite must fail the test rather
// than skip it: under CI (CI=true) or with CFS_TEST_STRICT=1.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("CFS_TEST_STRICT") == "1"
}

// Skip skips the test with a loud reason, or fails it in strict mode.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("prerequisite missing under CI (strict mode): %s", reason)
	}
	t.Skipf("SKIPPED (prerequisite missing, would fail under CI=true): %s", reason)
}

// RequireRoot skips (or fails, in strict mode) unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "test needs root")
	}
}

// RequireTool returns the path of an external tool, skipping (or failing,
// in strict mode) if it is not installed.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "tool "+name+" not found in PATH (install it: see README / .ci/run)")
	}
	return p
}

// RepoRoot returns the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// SharedDir returns the read-only shared data directory: $CFS_SHARED, or
// ../shared next to the repository. A missing directory fails the test:
// the golden data is part of the project's contract.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CFS_SHARED")
	if dir == "" {
		dir = filepath.Join(filepath.Dir(RepoRoot(t)), "shared")
	}
	if _, err := os.Stat(filepath.Join(dir, "testdata")); err != nil {
		t.Fatalf("shared data not found at %s (set CFS_SHARED): %v", dir, err)
	}
	return dir
}

// GoldenDir returns ../shared/testdata/composefs-golden.
func GoldenDir(t testing.TB) string {
	return filepath.Join(SharedDir(t), "testdata", "composefs-golden")
}

// UpstreamAssetsDir returns ../shared/testdata/upstream-assets.
func UpstreamAssetsDir(t testing.TB) string {
	return filepath.Join(SharedDir(t), "testdata", "upstream-assets")
}

// GoldenCases lists the case directories of the golden data, sorted.
func GoldenCases(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(GoldenDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// Long reports whether slow tests (e.g. hashing 4 GiB for the hugefile
// golden case) should run: CFS_TEST_LONG=1.
func Long() bool { return os.Getenv("CFS_TEST_LONG") == "1" }
