package mount_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/fstest"
	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(testutil.RunInMountNS(m)) }

type fixture struct {
	src, objects, image string
	digest              fsverity.Digest
	root                *composefs.Node
}

// build makes an image and object store of src.
func build(t *testing.T, src string) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{src: src, objects: filepath.Join(dir, "objects"), image: filepath.Join(dir, "image.cfs")}
	store, err := objstore.Open(fx.objects)
	if err != nil {
		t.Fatal(err)
	}
	fx.root, err = composefs.BuildFromDir(context.Background(), src, composefs.BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fx.digest, err = erofs.Write(f, fx.root, erofs.DefaultWriteOptions()); err != nil {
		t.Fatal(err)
	}
	return fx
}

// sampleTree writes a small tree with every file type.
func sampleTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "etc/empty"), 0o700))
	must(os.WriteFile(filepath.Join(src, "usr/bin/tool"), bytes.Repeat([]byte("binary!"), 3000), 0o755))
	must(os.WriteFile(filepath.Join(src, "usr/bin/copy"), bytes.Repeat([]byte("binary!"), 3000), 0o644))
	must(os.WriteFile(filepath.Join(src, "etc/small"), []byte("inline content\n"), 0o600))
	must(os.WriteFile(filepath.Join(src, "etc/empty-file"), nil, 0o644))
	must(os.WriteFile(filepath.Join(src, "etc/other"), bytes.Repeat([]byte{0xab}, 70), 0o640))
	must(os.Symlink("../usr/bin/tool", filepath.Join(src, "etc/link")))
	must(unix.Mkfifo(filepath.Join(src, "etc/fifo"), 0o600))
	must(unix.Mknod(filepath.Join(src, "etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Lsetxattr(filepath.Join(src, "usr/bin/tool"), "user.comment", []byte("a value"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "etc"), "trusted.overlay.redirect", []byte("/evil"), 0))
	must(os.Chown(filepath.Join(src, "etc/other"), 1000, 100))
	return src
}

func mountpoint(t *testing.T) string {
	t.Helper()
	m := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(m, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

func mountedAt(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+dir+" ")
}

func compare(t *testing.T, want, got string) {
	t.Helper()
	diffs, err := fstest.CompareTrees(want, got, fstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

func TestMountObjectsMatchesSource(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	mnt := mountpoint(t)
	tmp := t.TempDir()
	err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{
		BaseDirs: []string{fx.objects}, ExpectedDigest: &fx.digest, Verify: mount.VerifyObjects, TempDir: tmp,
	})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, fx.src, mnt)
	// Escaped overlay xattrs come back as the user set them.
	if x, _ := fstest.Xattrs(filepath.Join(mnt, "etc"), nil); !strings.Contains(strings.Join(x, " "), "trusted.overlay.redirect=/evil") {
		t.Errorf("escaped xattr lost: %q", x)
	}
	if err := mount.Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if mountedAt(t, mnt) {
		t.Fatal("still mounted after Unmount")
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("temporary EROFS mount point left behind: %v", ents)
	}
}

func TestMountGoldenBasic(t *testing.T) {
	testutil.RequireMountNS(t)
	src := filepath.Join(t.TempDir(), "tree")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.ExtractTar(t, filepath.Join(testutil.GoldenDir(t), "basic", "tree.tar"), src)
	fx := build(t, src)
	golden, err := os.ReadFile(filepath.Join(testutil.GoldenDir(t), "basic", "image.digest"))
	if err != nil {
		t.Fatal(err)
	}
	if fx.digest.String() != strings.TrimSpace(string(golden)) {
		t.Fatalf("image digest %s, golden %s", fx.digest, golden)
	}
	mnt := mountpoint(t)
	if err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects}); err != nil {
		t.Fatal(err)
	}
	defer mount.Unmount(mnt)
	compare(t, src, mnt)
	// As upstream's own tests do: imaging the mounted tree reproduces the
	// image digest (same metadata, same object digests).
	again, err := composefs.BuildFromDir(context.Background(), mnt, composefs.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := erofs.Write(io.Discard, again, erofs.DefaultWriteOptions())
	if err != nil || d != fx.digest {
		t.Fatalf("image of the mounted tree: %s %v, want %s", d, err, fx.digest)
	}
}

func TestMountKernelVerityRefusedWithoutFsverity(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	if f, err := os.Open(fx.image); err == nil {
		_, verr := fsverity.Measure(f)
		f.Close()
		if !errors.Is(verr, fsverity.ErrNotSupported) {
			t.Skip("this kernel/filesystem has fs-verity: the refusal path does not apply")
		}
	}
	mnt := mountpoint(t)
	err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}})
	if !errors.Is(err, mount.ErrVerityUnsupported) {
		t.Fatalf("VerifyKernel without fs-verity: %v, want ErrVerityUnsupported", err)
	}
	if !strings.Contains(err.Error(), "verify=objects") {
		t.Errorf("error does not say what to do: %v", err)
	}
	if mountedAt(t, mnt) {
		t.Fatal("mounted although refused")
	}
}

func TestMountTamperedImageRefused(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	b, err := os.ReadFile(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	b[2000] ^= 0x01
	bad := filepath.Join(t.TempDir(), "bad.cfs")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := mountpoint(t)
	err = mount.Mount(context.Background(), bad, mnt, mount.Options{BaseDirs: []string{fx.objects}, ExpectedDigest: &fx.digest, Verify: mount.VerifyNone})
	var dm *mount.DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != fx.digest || dm.Found == fx.digest {
		t.Fatalf("tampered image: %v, want *DigestMismatchError naming both digests", err)
	}
	if !strings.Contains(err.Error(), fx.digest.String()) {
		t.Errorf("message lacks the expected digest: %v", err)
	}
	if mountedAt(t, mnt) {
		t.Fatal("tampered image mounted")
	}
}

func firstObject(t *testing.T, fx *fixture) string {
	t.Helper()
	f, err := os.Open(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	objs, err := erofs.Objects(f, st.Size())
	if err != nil || len(objs) == 0 {
		t.Fatalf("objects: %v %v", objs, err)
	}
	return objs[0]
}

func TestMountObjectsRefusesMissingOrAlteredObject(t *testing.T) {
	testutil.RequireMountNS(t)
	for _, tc := range []string{"missing", "altered"} {
		t.Run(tc, func(t *testing.T) {
			fx := build(t, sampleTree(t))
			obj := firstObject(t, fx)
			p := filepath.Join(fx.objects, obj)
			if tc == "missing" {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			} else {
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 0xff
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mnt := mountpoint(t)
			err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects})
			var oe *mount.ObjectError
			if !errors.As(err, &oe) || oe.Object != obj || !errors.Is(err, mount.ErrObject) {
				t.Fatalf("%s object: %v, want *ObjectError for %s", tc, err, obj)
			}
			if tc == "missing" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing object error does not wrap fs.ErrNotExist: %v", err)
			}
			if tc == "altered" && !errors.Is(err, mount.ErrDigestMismatch) {
				t.Errorf("altered object error does not wrap ErrDigestMismatch: %v", err)
			}
			if mountedAt(t, mnt) {
				t.Fatal("mounted with a bad object")
			}
		})
	}
}

func TestMountNoneMissingObjectFailsOnOpen(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	mnt := mountpoint(t)
	if err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyNone}); err != nil {
		t.Fatal(err)
	}
	defer mount.Unmount(mnt)
	if err := os.Remove(filepath.Join(fx.objects, firstObject(t, fx))); err != nil {
		t.Fatal(err)
	}
	// Both tool and copy share the object; reading either must fail.
	if b, err := os.ReadFile(filepath.Join(mnt, "usr/bin/tool")); err == nil {
		t.Fatalf("read %d bytes of a file whose object is gone", len(b))
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/small")); err != nil || string(b) != "inline content\n" {
		t.Fatalf("inline file: %q %v", b, err)
	}
}

// An image on tmpfs cannot be mounted file-backed (ENOTBLK): the loop
// device fallback must work and release the device on unmount.
func TestMountFromTmpfsUsesLoopDevice(t *testing.T) {
	testutil.RequireMountNS(t)
	testutil.RequireTool(t, "losetup")
	fx := build(t, sampleTree(t))
	tmpfs := t.TempDir()
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(tmpfs, unix.MNT_DETACH)
	img := filepath.Join(tmpfs, "image.cfs")
	b, _ := os.ReadFile(fx.image)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := mountpoint(t)
	if err := mount.Mount(context.Background(), img, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects, ExpectedDigest: &fx.digest}); err != nil {
		t.Fatal(err)
	}
	compare(t, fx.src, mnt)
	out, _ := exec.Command("losetup", "-j", img).Output()
	if len(out) == 0 {
		t.Error("no loop device backs the tmpfs image while mounted")
	}
	if err := mount.Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("losetup", "-j", img).Output()
	if len(out) != 0 {
		t.Errorf("loop device not released after unmount: %s", out)
	}
}
