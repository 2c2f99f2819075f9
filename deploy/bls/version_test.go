package bls

import (
	"errors"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
)

func checkCmp(t *testing.T, a, b string, want int) {
	t.Helper()
	if got := CompareVersions(a, b); got != want {
		t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
	}
	if got := CompareVersions(b, a); got != -want {
		t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", b, a, got, -want)
	}
}

// The examples of the UAPI Version Format Specification (current text;
// earlier revisions had "0 < ~" and "(empty) < ~", which systemd never did and
// the spec has since corrected).
func TestCompareVersionsSpecExamples(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"11", "11", 0},
		{"systemd-123", "systemd-123", 0},
		{"bar-123", "foo-123", -1},
		{"123a", "123", 1},
		{"123.a", "123", 1},
		{"123.a", "123.b", -1},
		{"123a", "123.a", 1},
		{"11α", "11β", 0},
		{"B", "a", -1},
		{"A", "a", -1},
		{"", "0", -1},
		{"0.", "0", 1},
		{"0.0", "0", 1},
		{"0", "~", 1},
		{"", "~", 1},
		{"1_", "1", 0},
		{"_1", "1", 0},
		{"1_", "1.2", -1},
		{"1_2_3", "1.3.3", 1},
		{"1+", "1", 0},
		{"+1", "1", 0},
		{"1+", "1.2", -1},
		{"1+2+3", "1.3.3", 1},
	} {
		checkCmp(t, tc.a, tc.b, tc.want)
	}
	chain := []string{"122.1", "123~rc1-1", "123", "123-a", "123-a.1", "123-1", "123-1.1",
		"123^post1", "123.a-1", "123.1-1", "123a-1", "124-1"}
	checkChain(t, chain)
}

// checkChain asserts that every element is older than every later one.
func checkChain(t *testing.T, chain []string) {
	t.Helper()
	for i := range chain {
		checkCmp(t, chain[i], chain[i], 0)
		for j := i + 1; j < len(chain); j++ {
			checkCmp(t, chain[i], chain[j], -1)
		}
	}
}

// Vectors from systemd's test-string-util.c (strverscmp_improved and the
// rpmvercmp-derived cases, with systemd's documented deviations).
func TestCompareVersionsSystemdVectors(t *testing.T) {
	checkChain(t, []string{"~1", "", "ab", "abb", "abc", "0001", "002", "12", "122", "122.9",
		"123~rc1", "123", "123-a", "123-a.1", "123-a1", "123-a1.1", "123-3", "123-3.1",
		"123^patch1", "123^1", "123.a-1", "123.1-1", "123a-1", "124"})
	for _, p := range [][2]string{
		{"123.45-67.88", "123.45-67.89"}, {"123.45-67.89", "123.45-67.89a"}, {"123.45-67.ab", "123.45-67.89"},
		{"123.45-67.9", "123.45-67.89"}, {"123.45-67", "123.45-67.89"}, {"123.45-66.89", "123.45-67.89"},
		{"123.45-9.99", "123.45-67.89"}, {"123.42-99.99", "123.45-67.89"}, {"123-99.99", "123.45-67.89"},
		{"123~rc1-99.99", "123.45-67.89"}, {"123~rc1-99.99", "123-45.67.89"}, {"123~rc1-99.99", "123~rc2-67.89"},
		{"123~rc1-99.99", "123^aa2-67.89"}, {"123~rc1-99.99", "123aa2-67.89"}, {"123-99.99", "123^aa2-67.89"},
		{"123-99.99", "123aa2-67.89"}, {"123^45-67.89", "123.45-67.89"}, {"123^aa1-99.99", "123^aa2-67.89"},
		{"123^aa2-67.89", "123aa2-67.89"}, {"123.aa2-67.89", "123aa2-67.89"}, {"123.aa2-67.89", "123.ab2-67.89"},
	} {
		checkCmp(t, p[0], p[1], -1)
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"123_aa2-67.89", "123aa+2-67.89", 0},
		{"123.", "123", 1}, {"12_3", "123", -1}, {"12_3", "12", 1}, {"12_3", "12.3", 1},
		{"123.0", "123", 1}, {"123_0", "123", 1}, {"123..0", "123.0", -1},
		{"", "", 0}, {"0_", "0", 0}, {"_0_", "0", 0}, {"_0", "0", 0}, {"0", "0___", 0},
		{"", "_", 0}, {"_", "_", 0}, {"", "~", 1}, {"~", "~", 0},
		// rpmvercmp cases
		{"1.0", "1.0", 0}, {"1.0", "2.0", -1}, {"2.0.1", "2.0.1", 0}, {"2.0", "2.0.1", -1},
		{"2.0.1a", "2.0.1", 1}, {"5.5p1", "5.5p2", -1}, {"5.5p1", "5.5p10", -1},
		{"10xyz", "10.1xyz", 1}, {"xyz10", "xyz10.1", -1}, {"xyz.4", "8", -1}, {"xyz.4", "2", -1},
		{"5.5p2", "5.6p1", -1}, {"5.6p1", "6.5p1", -1}, {"6.0.rc1", "6.0", 1}, {"10b2", "10a1", 1},
		{"1.0a", "1.0aa", -1}, {"10.0001", "10.1", 0}, {"10.0001", "10.0039", -1}, {"4.999.9", "5.0", -1},
		{"20101121", "20101122", -1}, {"2.0", "2_0", -1}, {"a+", "a_", 0}, {"+_", "_+", 0},
		{"1.0~rc1", "1.0", -1}, {"1.0~rc1", "1.0~rc2", -1}, {"1.0~rc1~git123", "1.0~rc1", -1},
		{"1.0^", "1.0", 1}, {"1.0^git1", "1.0", 1}, {"1.0^git1", "1.0^git2", -1}, {"1.0^git1", "1.01", -1},
		{"1.0^20160101", "1.0.1", -1}, {"1.0^20160102", "1.0^20160101^git1", 1},
		{"1.0~rc1^git1", "1.0~rc1", 1}, {"1.0^git1", "1.0^git1~pre", 1},
		{"1b.fc17", "1.fc17", 1}, {"1g.fc17", "1.fc17", 1},
		{"1.1.α", "1.1.β", 0}, {"1.1.αα", "1.1.α", 0},
		{"99999999999999999999999999", "99999999999999999999999998", 1},
	} {
		checkCmp(t, tc.a, tc.b, tc.want)
	}
}

// TestCompareVersionsAgainstSystemdAnalyze cross-checks random strings
// against the reference implementation, systemd-analyze compare-versions.
func TestCompareVersionsAgainstSystemdAnalyze(t *testing.T) {
	tool := testutil.RequireTool(t, "systemd-analyze")
	if err := exec.Command(tool, "compare-versions", "1", "1").Run(); err != nil {
		testutil.Skip(t, "systemd-analyze has no compare-versions verb (needs systemd ≥ 252): "+err.Error())
	}
	const alphabet = "0123456789aAbz.-~^_+"
	r := rand.New(rand.NewPCG(1, 2))
	gen := func() string {
		b := make([]byte, r.IntN(7))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	n := 64
	if testing.Short() {
		n = 16
	}
	type pair struct{ a, b string }
	pairs := make([]pair, n)
	for i := range pairs {
		pairs[i] = pair{gen(), gen()}
		if i%5 == 0 {
			pairs[i].b = pairs[i].a + gen() // shared prefixes exercise the deeper rules
		}
	}
	// systemd-analyze takes one pair per run; run several at once.
	want := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, p := range pairs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := exec.Command(tool, "compare-versions", "--", p.a, p.b).Run()
			var ee *exec.ExitError
			switch {
			case err == nil:
			case errors.As(err, &ee) && ee.ExitCode() == 11:
				want[i] = 1
			case errors.As(err, &ee) && ee.ExitCode() == 12:
				want[i] = -1
			default:
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	for i, p := range pairs {
		if errs[i] != nil {
			t.Fatalf("systemd-analyze compare-versions %q %q: %v", p.a, p.b, errs[i])
		}
		if got := CompareVersions(p.a, p.b); got != want[i] {
			t.Errorf("CompareVersions(%q, %q) = %d, systemd-analyze says %d", p.a, p.b, got, want[i])
		}
	}
}
