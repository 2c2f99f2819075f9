package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// On a filesystem with reflinks, build stores objects as clones of the
// source files (FICLONE, or copy_file_range, which clones within one XFS
// or btrfs): no data is copied, and the clones are copies on write, so
// changing a source file in place afterwards leaves its object as it was.
// Checked on a loop-mounted XFS with filefrag, which reports extents
// shared between files; a copy through user space fails it.
func TestBuildReflinksOnXFS(t *testing.T) {
	testutil.RequireMountNS(t)
	mkfs := testutil.RequireTool(t, "mkfs.xfs")
	filefrag := testutil.RequireTool(t, "filefrag")
	mountTool := testutil.RequireTool(t, "mount")
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil { // XFS needs at least 300 MiB
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command(mountTool, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })

	e := newEnv(t, mnt, "ed25519")
	src := filepath.Join(mnt, "src")
	genTree(t, src, 40, 200<<10, 11)
	e.build(t, "os/x86_64/stable", src)

	r, err := repo.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	shared := func(p string) bool {
		t.Helper()
		out, err := exec.Command(filefrag, "-v", p).CombinedOutput()
		if err != nil {
			t.Fatalf("filefrag %s: %v: %s", p, err, out)
		}
		return strings.Contains(string(out), "shared")
	}
	var changed string
	var before fsverity.Digest
	checked := 0
	err = filepath.WalkDir(src, func(p string, de os.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		st, err := os.Stat(p)
		if err != nil || st.Size() <= 64 { // inline: no object
			return err
		}
		d, _, err := fsverity.DigestFile(context.Background(), p)
		if err != nil {
			return err
		}
		obj := r.Objects.Path(d)
		if !shared(obj) || !shared(p) {
			out, _ := exec.Command(filefrag, "-v", obj).CombinedOutput()
			t.Errorf("object %s of %s shares no extent with it (copied, not cloned):\n%s", obj, p, out)
		}
		checked++
		if changed == "" && st.Size() > 8192 {
			changed, before = p, d
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 30 || changed == "" {
		t.Fatalf("only %d files with objects checked", checked)
	}

	// Overwrite the start of one source file in place: its object keeps
	// its content (copy on write), and fsck finds the store intact.
	f, err := os.OpenFile(changed, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed after the build"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _, err := fsverity.DigestFile(context.Background(), r.Objects.Path(before)); err != nil || got != before {
		t.Fatalf("object %s after its source changed: digest %s, %v", before, got, err)
	}
	ok(t, "fsck", "--repo", e.repo)
}
