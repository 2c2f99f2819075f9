package composefs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// benchTree creates a tree shaped like a small OS image: 5000 files in
// nested directories, 20% inline (≤ 64 bytes), 50% up to 16 KiB, 25% up
// to 256 KiB, 5% up to 1 MiB, some duplicates; and returns the bytes and
// the files with external content.
func benchTree(b *testing.B) (dir string, total int64, external []string) {
	b.Helper()
	dir = b.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	const files = 5000
	for i := range files {
		var size int
		switch p := r.IntN(100); {
		case p < 20:
			size = r.IntN(65)
		case p < 70:
			size = 65 + r.IntN(16<<10)
		case p < 95:
			size = 16<<10 + r.IntN(240<<10)
		default:
			size = 256<<10 + r.IntN(768<<10)
		}
		data := randBytes(uint64(i%4500), size) // 10% duplicates
		p := filepath.Join(dir, fmt.Sprintf("usr/d%02d/s%d/f%04d", i%40, i%7, i))
		writeFile(b, p, data)
		total += int64(size)
		if size > InlineContentMax {
			external = append(external, p)
		}
	}
	return dir, total, external
}

// BenchmarkBuildFromDir measures BuildFromDir on a 5000-file tree (page
// cache warm): single-threaded, on all cores, and on all cores filling a
// new object store or re-verifying a full one.
func BenchmarkBuildFromDir(b *testing.B) {
	ctx := context.Background()
	dir, total, _ := benchTree(b)
	run := func(b *testing.B, opts func(i int) BuildOptions) {
		b.SetBytes(total)
		b.ResetTimer()
		cpu := cpuTime(syscall.RUSAGE_SELF)
		for i := 0; i < b.N; i++ {
			if _, err := BuildFromDir(ctx, dir, opts(i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime(syscall.RUSAGE_SELF)-cpu)/float64(b.N), "cpu-ns/op")
	}
	b.Run("threads=1", func(b *testing.B) {
		run(b, func(int) BuildOptions { return BuildOptions{Threads: 1} })
	})
	b.Run(fmt.Sprintf("threads=%d", runtime.GOMAXPROCS(0)), func(b *testing.B) {
		run(b, func(int) BuildOptions { return BuildOptions{} })
	})
	b.Run("store=new", func(b *testing.B) {
		base := b.TempDir()
		run(b, func(i int) BuildOptions {
			s, err := objstore.Open(filepath.Join(base, fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			return BuildOptions{Store: s}
		})
	})
	b.Run("store=existing", func(b *testing.B) {
		s, err := objstore.Open(filepath.Join(b.TempDir(), "objects"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := BuildFromDir(ctx, dir, BuildOptions{Store: s}); err != nil {
			b.Fatal(err)
		}
		run(b, func(int) BuildOptions { return BuildOptions{Store: s} })
	})
}

// BenchmarkFsverityUtilsDigest is the reference point: fsverity-utils
// (C, OpenSSL, one thread, the same per-file work as upstream
// mkcomposefs's digest pass) hashing the same files.
func BenchmarkFsverityUtilsDigest(b *testing.B) {
	tool := testutil.RequireTool(b, "fsverity")
	_, total, external := benchTree(b)
	b.SetBytes(total)
	b.ResetTimer()
	cpu := cpuTime(syscall.RUSAGE_CHILDREN)
	for i := 0; i < b.N; i++ {
		for j := 0; j < len(external); j += 500 {
			cmd := exec.Command(tool, append([]string{"digest", "--compact"}, external[j:min(j+500, len(external))]...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	}
	b.ReportMetric(float64(cpuTime(syscall.RUSAGE_CHILDREN)-cpu)/float64(b.N), "cpu-ns/op")
}

// cpuTime returns user+system CPU time of the process or its children.
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
