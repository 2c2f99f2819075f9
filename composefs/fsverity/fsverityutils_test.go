package fsverity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// toolDigests runs `fsverity digest --compact` on files (one process).
func toolDigests(t *testing.T, tool string, alg Algorithm, files []string) []string {
	t.Helper()
	args := append([]string{"digest", "--compact", "--hash-alg=" + alg.String()}, files...)
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args[:3], " "), err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(files) {
		t.Fatalf("fsverity printed %d digests for %d files:\n%s", len(lines), len(files), out)
	}
	return lines
}

// writeTestFile creates a file of size bytes. Small files get random
// content; big ones are sparse (zeros) with random 4 KiB patches at the
// start, the middle and the end, so that block order matters.
func writeTestFile(t *testing.T, r *rand.Rand, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if size <= 4<<20 {
		if _, err := f.Write(randomBytes(r, int(size))); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, size/2 + 123, size - 4096} {
		if _, err := f.WriteAt(randomBytes(r, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAgainstFsverityUtils(t *testing.T) {
	tool := testutil.RequireTool(t, "fsverity")
	r := rand.New(rand.NewPCG(2026, 1))
	sizes := []int64{0, 1, 63, 64, 65, 4095, 4096, 4097, 8192,
		// SHA-512: 64 hashes a block, SHA-256: 128; the tree gains a
		// level one byte past each power.
		64 * 4096, 64*4096 + 1, 128 * 4096, 128*4096 + 1,
		64 * 64 * 4096, 64*64*4096 + 1, 128 * 128 * 4096, 128*128*4096 + 1,
	}
	for range 20 {
		sizes = append(sizes, r.Int64N(3<<20))
	}
	dir := t.TempDir()
	files := make([]string, len(sizes))
	for i, size := range sizes {
		files[i] = filepath.Join(dir, fmt.Sprintf("f%02d-%d", i, size))
		writeTestFile(t, r, files[i], size)
	}
	ctx := context.Background()
	for _, alg := range []Algorithm{SHA256, SHA512} {
		want := toolDigests(t, tool, alg, files)
		for i, path := range files {
			var got string
			var n int64
			var err error
			if alg == SHA256 {
				var d Digest
				d, n, err = DigestFile(ctx, path)
				got = d.String()
			} else {
				var d Digest512
				d, n, err = DigestFile512(ctx, path)
				got = d.String()
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != sizes[i] {
				t.Errorf("%s: size %d, want %d", path, n, sizes[i])
			}
			if got != want[i] {
				t.Errorf("%v size %d: got %s, fsverity-utils %s", alg, sizes[i], got, want[i])
			}
		}
	}
}
