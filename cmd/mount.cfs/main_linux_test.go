package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fstest"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the helper: run as "mount.cfs" (argv[0], as
// mount(8) runs /sbin/mount.cfs), it is main.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "mount.cfs" {
		main()
		os.Exit(0)
	}
	os.Exit(testutil.RunInMountNS(m))
}

type fixture struct {
	src, objects, image string
	digest              fsverity.Digest
}

func build(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{src: filepath.Join(dir, "src"), objects: filepath.Join(dir, "objects"), image: filepath.Join(dir, "image.cfs")}
	for p, c := range map[string]string{"bin/sh": strings.Repeat("#!", 4000), "etc/os-release": "ID=cfs\n", "etc/big": strings.Repeat("z", 70)} {
		if err := os.MkdirAll(filepath.Join(fx.src, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fx.src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := objstore.Open(fx.objects)
	if err != nil {
		t.Fatal(err)
	}
	root, err := composefs.BuildFromDir(context.Background(), fx.src, composefs.BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if fx.digest, err = erofs.Write(&b, root, erofs.DefaultWriteOptions()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.image, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

// helper runs this binary as mount.cfs with args, as mount(8) does.
func helper(t *testing.T, args ...string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Path: self, Args: append([]string{"mount.cfs"}, args...)}
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func mountpoint(t *testing.T) string {
	t.Helper()
	m := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(m, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// The helper run directly with the argv mount(8) passes (util-linux:
// SOURCE TARGET [-sfnv] -o OPTIONS).
func TestHelperDirect(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t)
	mnt := mountpoint(t)
	before := testutil.MountPoints(t)
	opts := `rw,basedir=` + fx.objects + `,digest=` + fx.digest.String() + `,verify=objects`
	if out, code := helper(t, fx.image, mnt, "-n", "-v", "-o", opts); code != 0 {
		t.Fatalf("mount.cfs: exit %d: %s", code, out)
	}
	fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}

	wrong := fx.digest
	wrong[0] ^= 1
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{fx.image, mnt, "-o", "basedir=" + fx.objects + ",digest=" + wrong.String() + ",verify=objects"}, 4, "digest mismatch"},
		{[]string{fx.image, mnt, "-o", "basedir=" + fx.objects}, 5, "verify=objects"},
		{[]string{fx.image, mnt, "-o", "basedir=" + fx.objects + ",bogus"}, 2, `unsupported mount option "bogus"`},
		{[]string{fx.image, mnt, "-o", "digest=" + fx.digest.String()}, 2, "basedir"},
		{[]string{fx.image}, 2, "usage"},
	} {
		out, code := helper(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.msg) {
			t.Errorf("mount.cfs %q: exit %d %q, want exit %d and %q", tc.args, code, out, tc.code, tc.msg)
		}
	}
	if after := testutil.MountPoints(t); !slices.Equal(before, after) {
		t.Errorf("mounts left: %q", after)
	}
}

// mount -t cfs through mount(8): it looks for /sbin/mount.cfs (here
// /sbin -> usr/sbin). A tmpfs over /usr/sbin, only in this test's
// private mount namespace and only for this test, holds a symlink named
// mount.cfs to this binary.
func TestMountTCfs(t *testing.T) {
	testutil.RequireMountNS(t)
	mountBin := testutil.RequireTool(t, "mount")
	umountBin := testutil.RequireTool(t, "umount")
	fx := build(t)
	mnt := mountpoint(t)
	before := testutil.MountPoints(t)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sbin, err := filepath.EvalSymlinks("/sbin")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sbin, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(sbin, "mount.cfs")); err != nil {
		unix.Unmount(sbin, unix.MNT_DETACH)
		t.Fatal(err)
	}
	sbinMounted := true
	defer func() {
		if sbinMounted {
			unix.Unmount(sbin, unix.MNT_DETACH)
		}
	}()

	out, err := exec.Command(mountBin, "-t", "cfs", fx.image, mnt, "-o",
		"basedir="+fx.objects+",digest="+fx.digest.String()+",verify=objects").CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t cfs: %v: %s", err, out)
	}
	fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
	if out, err := exec.Command(umountBin, mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}

	wrong := fx.digest
	wrong[31] ^= 0x80
	out, err = exec.Command(mountBin, "-t", "cfs", fx.image, mnt, "-o",
		"basedir="+fx.objects+",digest="+wrong.String()+",verify=objects").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "digest mismatch") || !strings.Contains(string(out), wrong.String()) {
		t.Fatalf("mount -t cfs with a wrong digest: %v: %s", err, out)
	}
	if err := unix.Unmount(sbin, 0); err != nil {
		t.Fatal(err)
	}
	sbinMounted = false
	if after := testutil.MountPoints(t); !slices.Equal(before, after) {
		t.Errorf("mounts left: %q", after)
	}
}
