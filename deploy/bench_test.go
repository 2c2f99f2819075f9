package deploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/deploy"
)

// benchFiles is the size of the generated tree (CFS_BENCH_FILES overrides).
func benchFiles() int {
	if n, err := strconv.Atoi(os.Getenv("CFS_BENCH_FILES")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// writeBenchTree writes n files of 100 B to 8 KiB (each an object in the
// store) in directories of 100, plus a kernel, an initramfs and /usr/etc;
// files whose index is below changed get different content for version.
func writeBenchTree(b *testing.B, dir string, n, changed int, version string) {
	b.Helper()
	writeTree(b, dir, defaultSpec("bench"))
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, "usr/lib", fmt.Sprintf("pkg%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		seed := int64(i)
		if i%100 < changed {
			seed = int64(i) + 1_000_000*int64(len(version))
		}
		content := randomBytes(seed, 100+int(seed%8000))
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSetup builds commits A and B of an n-file tree differing in 1% of
// the files, pulls both and deploys A.
func benchSetup(b *testing.B) (*fixture, *deploy.Sysroot, commit.ID, commit.ID) {
	b.Helper()
	f := newFixture(b)
	s := f.open()
	n := benchFiles()
	var ids []commit.ID
	for i, version := range []string{"a", "bb"} {
		dir := b.TempDir()
		writeBenchTree(b, dir, n, 1, version)
		res, err := builder.Build(context.Background(), f.src, builder.Source{Dir: dir}, builder.Options{
			Ref: testRef + "-" + version, Version: version, Timestamp: 1700000000 + int64(i), Signers: []*sign.Signer{f.signer},
		})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, res.Commit)
	}
	trust, _ := s.TrustStore()
	for _, v := range []string{"a", "bb"} {
		if _, err := pullRef(s, f, testRef+"-"+v, trust); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Switch(context.Background(), ids[0].String(), deploy.SwitchOptions{}); err != nil {
		b.Fatal(err)
	}
	return f, s, ids[0], ids[1]
}

func benchSwitch(b *testing.B, verifyAll bool) {
	_, s, idA, idB := benchSetup(b)
	ctx := context.Background()
	targets := []commit.ID{idB, idA}
	var verified, objects int
	i := 0
	b.ResetTimer()
	for b.Loop() {
		res, err := s.Switch(ctx, targets[i%2].String(), deploy.SwitchOptions{VerifyAll: verifyAll})
		if err != nil {
			b.Fatal(err)
		}
		verified += res.ObjectsVerified
		objects = res.Objects
		i++
		if i%8 == 0 {
			b.StopTimer()
			if _, err := s.Cleanup(ctx, deploy.CleanupOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(verified)/float64(i), "objects-verified/op")
	b.ReportMetric(float64(objects), "objects")
}

// BenchmarkSwitch1Percent switches back and forth between two commits of
// a 20,000-file tree that differ in 1% of the files: the objects hashed
// are the 1% (objects-verified/op), plus one image regeneration.
func BenchmarkSwitch1Percent(b *testing.B) { benchSwitch(b, false) }

// BenchmarkSwitch1PercentVerifyAll is the same with --verify-all, for
// comparison: every object is hashed on every switch.
func BenchmarkSwitch1PercentVerifyAll(b *testing.B) { benchSwitch(b, true) }
