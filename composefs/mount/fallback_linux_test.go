package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fstest"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// The mount(2) fallbacks are for kernels older than this one: force them
// by making the new mount API fail as such kernels do, and check that
// the real kernel accepts what legacyVariants produces (escaped paths
// included) and that the result is the same tree.
func TestLegacyFallbacks(t *testing.T) {
	testutil.RequireMountNS(t)
	src := filepath.Join(t.TempDir(), "src")
	for p, content := range map[string]string{"a/external": strings.Repeat("x", 5000), "a/inline": "small", "b/other": strings.Repeat("y", 100)} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An object directory whose name needs every legacy escape.
	objects := filepath.Join(t.TempDir(), `obj,1:2\3`)
	store, err := objstore.Open(objects)
	if err != nil {
		t.Fatal(err)
	}
	root, err := composefs.BuildFromDir(context.Background(), src, composefs.BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	if _, err := erofs.Write(&img, root, erofs.DefaultWriteOptions()); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(image, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		fail   map[string]error // by filesystem type
		legacy string           // expected in the overlay's mountinfo options
	}{
		{"overlay without lowerdir+", map[string]error{"overlay": unix.EINVAL}, "lowerdir=/"},
		{"no new mount API at all", map[string]error{"overlay": unix.ENOSYS, "erofs": unix.ENOSYS}, "lowerdir=/"},
		{"new API", nil, "lowerdir+=/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newAPIMount = func(s Step) error {
				if err := tc.fail[s.Type]; err != nil {
					return fmt.Errorf("fsopen (simulated old kernel): %w", err)
				}
				return fsMount(s)
			}
			defer func() { newAPIMount = fsMount }()
			mnt := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			// Writable, with upper and work directories whose names
			// need escaping too.
			base := t.TempDir()
			upper, work := filepath.Join(base, `up,1:2\3`), filepath.Join(base, `wk,1:2\3`)
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := testutil.MountPoints(t)
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			err := Mount(context.Background(), image, mnt, Options{
				BaseDirs: []string{objects}, Verify: VerifyObjects, Logger: log, UpperDir: upper, WorkDir: work, Writable: true,
			})
			if err != nil {
				t.Fatalf("%v\n%s", err, logs.String())
			}
			// (the merged root directory takes the upper dir's mtime)
			fstest.AssertSameTree(t, src, mnt, fstest.Options{SkipDirTimes: true})
			info := mountinfoOf(t, mnt)
			if !strings.Contains(info, " overlay composefs ") || !strings.Contains(info, tc.legacy) {
				t.Errorf("mountinfo %q lacks %q", info, tc.legacy)
			}
			if tc.fail != nil && !strings.Contains(logs.String(), "trying mount(2)") {
				t.Errorf("fallback not logged:\n%s", logs.String())
			}
			if err := os.WriteFile(filepath.Join(mnt, "a/new"), []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := Unmount(mnt); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(upper, "a/new")); err != nil || string(b) != "new" {
				t.Errorf("write did not land in the upper dir: %q %v", b, err)
			}
			if after := testutil.MountPoints(t); len(after) != len(before) {
				t.Errorf("mounts left: %q", after[len(before):])
			}
		})
	}
}

// A failure in the second step unwinds the first; a failure in the first
// leaves nothing to unwind.
func TestApplyUnwinds(t *testing.T) {
	testutil.RequireMountNS(t)
	dirs := make([]string, 3)
	for i := range dirs {
		dirs[i] = filepath.Join(t.TempDir(), fmt.Sprint("d", i))
		if err := os.Mkdir(dirs[i], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before := testutil.MountPoints(t)
	plan := []Step{
		{Type: "tmpfs", Source: "cfs-test", Target: dirs[0], Options: []string{"size=1m"}},
		{Type: "tmpfs", Source: "cfs-test", Target: dirs[1], Options: []string{"size=1m"}, Detach: true},
		{Type: "tmpfs", Source: "cfs-test", Target: dirs[2], Options: []string{"no-such-option=1"}},
	}
	var mounted []string
	newAPIMount = func(s Step) error {
		err := fsMount(s)
		if err == nil {
			mounted = append(mounted, s.Target)
		}
		return err
	}
	defer func() { newAPIMount = fsMount }()
	err := apply(context.Background(), plan, slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("apply: %v, want EINVAL naming the bad option", err)
	}
	if len(mounted) != 2 {
		t.Fatalf("steps mounted before the failure: %q", mounted)
	}
	if after := testutil.MountPoints(t); len(after) != len(before) {
		t.Fatalf("not unwound: %q", after[len(before):])
	}

	// Success: Detach steps are gone, the others stay.
	if err := apply(context.Background(), plan[:2], slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dirs[0], unix.MNT_DETACH)
	if !testutil.IsMountPoint(t, dirs[0]) || testutil.IsMountPoint(t, dirs[1]) {
		t.Fatalf("after apply: %q", testutil.MountPoints(t)[len(before):])
	}
}

func mountinfoOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return line
		}
	}
	t.Fatalf("%s not in mountinfo", dir)
	return ""
}
