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
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fstest"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// Every test runs as root in a private mount namespace: nothing reaches
// the host's mount table.
func TestMain(m *testing.M) { os.Exit(testutil.RunInMountNS(m)) }

type fixture struct {
	src, objects, image string
	digest              fsverity.Digest
}

// build makes an object store and an image of src with the builder and
// writer.
func build(t *testing.T, src string) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{src: src, objects: filepath.Join(dir, "objects"), image: filepath.Join(dir, "image.cfs")}
	store, err := objstore.Open(fx.objects)
	if err != nil {
		t.Fatal(err)
	}
	root, err := composefs.BuildFromDir(context.Background(), src, composefs.BuildOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fx.digest, err = erofs.Write(f, root, erofs.DefaultWriteOptions()); err != nil {
		t.Fatal(err)
	}
	return fx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sampleTree writes a small tree with every file type, external and
// inline files, a user's own trusted.overlay xattr, owners and devices.
func sampleTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755))
	must(t, os.MkdirAll(filepath.Join(src, "etc/empty"), 0o700))
	must(t, os.WriteFile(filepath.Join(src, "usr/bin/tool"), bytes.Repeat([]byte("binary!"), 3000), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "usr/bin/copy"), bytes.Repeat([]byte("binary!"), 3000), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "etc/small"), []byte("inline content\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "etc/empty-file"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "etc/other"), bytes.Repeat([]byte{0xab}, 70), 0o640))
	must(t, os.Symlink("../usr/bin/tool", filepath.Join(src, "etc/link")))
	must(t, unix.Mkfifo(filepath.Join(src, "etc/fifo"), 0o600))
	must(t, unix.Mknod(filepath.Join(src, "etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Lsetxattr(filepath.Join(src, "usr/bin/tool"), "user.comment", []byte("a value"), 0))
	must(t, unix.Lsetxattr(filepath.Join(src, "etc"), "trusted.overlay.redirect", []byte("/evil"), 0))
	must(t, os.Chown(filepath.Join(src, "etc/other"), 1000, 100))
	return src
}

func mountpoint(t *testing.T) string {
	t.Helper()
	m := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(m, 0o755))
	return m
}

// noLeftovers checks that the mount table is as it was and that the
// private temporary directory holds nothing.
func noLeftovers(t *testing.T, before []string, tmp string) {
	t.Helper()
	if after := testutil.MountPoints(t); !slices.Equal(before, after) {
		t.Errorf("mount table changed:\nbefore %q\nafter  %q", before, after)
	}
	if tmp != "" {
		if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
			t.Errorf("temporary directory not clean: %v %v", ents, err)
		}
	}
}

func objectsOf(t *testing.T, image string) []string {
	t.Helper()
	f, err := os.Open(image)
	must(t, err)
	defer f.Close()
	st, err := f.Stat()
	must(t, err)
	objs, err := erofs.Objects(f, st.Size())
	if err != nil || len(objs) == 0 {
		t.Fatalf("objects of %s: %v %v", image, objs, err)
	}
	return objs
}

// objectOf returns the object path holding the content of a source file.
func objectOf(t *testing.T, path string) string {
	t.Helper()
	d, _, err := fsverity.DigestFile(context.Background(), path)
	must(t, err)
	return d.ObjectPath()
}

func TestMountObjectsMatchesSource(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	mnt, tmp := mountpoint(t), t.TempDir()
	before := testutil.MountPoints(t)
	err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{
		BaseDirs: []string{fx.objects}, ExpectedDigest: &fx.digest, Verify: mount.VerifyObjects, TempDir: tmp,
	})
	must(t, err)
	if !testutil.IsMountPoint(t, mnt) {
		t.Fatal("Mount returned nil but nothing is mounted on the target")
	}
	// Only the overlay is left in the table: the EROFS mount is detached
	// and its private directory gone already.
	if got := testutil.MountPoints(t); len(got) != len(before)+1 {
		t.Errorf("want exactly one new mount, got %q", got[len(before):])
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("private EROFS mount point still there while mounted: %v", ents)
	}
	// findmnt shows what upstream's mount.composefs gives (spec §14.4).
	line := mountinfoLine(t, mnt)
	for _, want := range []string{" ro,", " - overlay composefs ro,", ",lowerdir+=" + tmp + "/.composefs.", ",datadir+=" + fx.objects + ",", "redirect_dir=on", "metacopy=on"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "verity=") {
		t.Errorf("verify=objects mounted with overlay verity: %s", line)
	}
	fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
	// The user's own trusted.overlay xattr (escaped in the image) reads
	// back as it was set.
	if x, err := fstest.Xattrs(filepath.Join(mnt, "etc"), nil); err != nil || x["trusted.overlay.redirect"] != "/evil" {
		t.Errorf("escaped xattr: %q %v", x, err)
	}
	// Read-only: nothing can be created.
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into a read-only mount: %v, want EROFS", err)
	}
	must(t, mount.Unmount(mnt))
	noLeftovers(t, before, tmp)
}

func TestMountGoldenBasic(t *testing.T) {
	testutil.RequireMountNS(t)
	gdir := filepath.Join(testutil.GoldenDir(t), "basic")
	src := filepath.Join(t.TempDir(), "tree")
	must(t, os.Mkdir(src, 0o755))
	testutil.ExtractTar(t, filepath.Join(gdir, "tree.tar"), src)
	fx := build(t, src)
	b, err := os.ReadFile(filepath.Join(gdir, "image.digest"))
	must(t, err)
	golden, err := fsverity.ParseDigest(strings.TrimSpace(string(b)))
	must(t, err)
	if fx.digest != golden {
		t.Fatalf("image digest %s, golden %s", fx.digest, golden)
	}
	before := testutil.MountPoints(t)
	for _, tc := range []struct {
		name, image string
		verify      mount.VerifyMode
	}{
		{"ours objects", fx.image, mount.VerifyObjects},
		{"ours none", fx.image, mount.VerifyNone},
		// upstream mkcomposefs's own bytes, read-only shared data
		{"upstream image", filepath.Join(gdir, "image.cfs"), mount.VerifyObjects},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := mountpoint(t)
			must(t, mount.Mount(context.Background(), tc.image, mnt, mount.Options{
				BaseDirs: []string{fx.objects}, ExpectedDigest: &golden, Verify: tc.verify,
			}))
			fstest.AssertSameTree(t, src, mnt, fstest.Options{})
			// As upstream's tests do: imaging the mounted tree gives
			// the same image digest (same metadata, same objects).
			again, err := composefs.BuildFromDir(context.Background(), mnt, composefs.BuildOptions{})
			must(t, err)
			d, err := erofs.Write(io.Discard, again, erofs.DefaultWriteOptions())
			if err != nil || d != golden {
				t.Errorf("image of the mounted tree: %s %v, want %s", d, err, golden)
			}
			must(t, mount.Unmount(mnt))
		})
	}
	noLeftovers(t, before, "")
}

// VerifyKernel: where the object store's filesystem has no fs-verity
// (this VM), refused with what to do instead. Where it has (a guest with
// fs-verity; the store enables it on insert), mounted with
// verity=require, and refused for an object without fs-verity.
func TestMountKernelVerity(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	objs := objectsOf(t, fx.image)
	f, err := os.Open(filepath.Join(fx.objects, objs[0]))
	must(t, err)
	_, verr := fsverity.Measure(f)
	f.Close()
	mnt, tmp := mountpoint(t), t.TempDir()
	before := testutil.MountPoints(t)
	opts := mount.Options{BaseDirs: []string{fx.objects}, TempDir: tmp}
	switch {
	case errors.Is(verr, fsverity.ErrNotSupported):
		err := mount.Mount(context.Background(), fx.image, mnt, opts)
		if !errors.Is(err, mount.ErrVerityUnsupported) {
			t.Fatalf("VerifyKernel without fs-verity: %v, want ErrVerityUnsupported", err)
		}
		for _, want := range []string{"fs-verity is not available on ext4 for " + fx.objects, "cannot enforce", "verify=objects", "verify=none"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	case verr == nil:
		must(t, mount.Mount(context.Background(), fx.image, mnt, opts))
		if !strings.Contains(mountinfoLine(t, mnt), "verity=require") {
			t.Errorf("overlay without verity=require: %s", mountinfoLine(t, mnt))
		}
		fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
		must(t, mount.Unmount(mnt))
		// An object without fs-verity: refused up front.
		p := filepath.Join(fx.objects, objs[0])
		b, err := os.ReadFile(p)
		must(t, err)
		must(t, os.Remove(p))
		must(t, os.WriteFile(p, b, 0o644))
		err = mount.Mount(context.Background(), fx.image, mnt, opts)
		if !errors.Is(err, mount.ErrVerityUnsupported) || !strings.Contains(err.Error(), "has no SHA-256 fs-verity") {
			t.Fatalf("object without fs-verity: %v", err)
		}
	default:
		t.Fatalf("measure an object: %v", verr)
	}
	noLeftovers(t, before, tmp)
}

func mountinfoLine(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return line
		}
	}
	t.Fatalf("%s is not a mount point", dir)
	return ""
}

func TestMountImageDigest(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	b, err := os.ReadFile(fx.image)
	must(t, err)
	b[2000] ^= 0x01 // inside the inode table
	bad := filepath.Join(t.TempDir(), "bad.cfs")
	must(t, os.WriteFile(bad, b, 0o644))
	badDigest, _, err := fsverity.DigestFile(context.Background(), bad)
	must(t, err)
	mnt, tmp := mountpoint(t), t.TempDir()
	before := testutil.MountPoints(t)
	for _, v := range []mount.VerifyMode{mount.VerifyNone, mount.VerifyObjects} {
		err = mount.Mount(context.Background(), bad, mnt, mount.Options{
			BaseDirs: []string{fx.objects}, ExpectedDigest: &fx.digest, Verify: v, TempDir: tmp,
		})
		var dm *mount.DigestMismatchError
		if !errors.As(err, &dm) || !errors.Is(err, mount.ErrDigestMismatch) {
			t.Fatalf("verify=%v: tampered image: %v, want *DigestMismatchError", v, err)
		}
		if dm.Expected != fx.digest || dm.Found != badDigest {
			t.Errorf("mismatch names %s/%s, want expected %s found %s", dm.Expected, dm.Found, fx.digest, badDigest)
		}
		for _, want := range []string{fx.digest.String(), badDigest.String(), bad} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message lacks %s: %v", want, err)
			}
		}
		noLeftovers(t, before, tmp)
	}
	// The right digest on the untouched image mounts.
	must(t, mount.Mount(context.Background(), fx.image, mnt, mount.Options{
		BaseDirs: []string{fx.objects}, ExpectedDigest: &fx.digest, Verify: mount.VerifyNone, TempDir: tmp,
	}))
	must(t, mount.Unmount(mnt))
	noLeftovers(t, before, tmp)
}

func TestMountNotComposefs(t *testing.T) {
	testutil.RequireMountNS(t)
	img := filepath.Join(t.TempDir(), "junk")
	must(t, os.WriteFile(img, bytes.Repeat([]byte{0x5a}, 8192), 0o644))
	mnt, tmp := mountpoint(t), t.TempDir()
	before := testutil.MountPoints(t)
	err := mount.Mount(context.Background(), img, mnt, mount.Options{BaseDirs: []string{t.TempDir()}, Verify: mount.VerifyNone, TempDir: tmp})
	if !errors.Is(err, mount.ErrNotComposefs) {
		t.Fatalf("junk image: %v, want ErrNotComposefs", err)
	}
	noLeftovers(t, before, tmp)
}

func TestMountObjectsRefusesBadObjects(t *testing.T) {
	testutil.RequireMountNS(t)
	src := sampleTree(t)
	toolObj := objectOf(t, filepath.Join(src, "usr/bin/tool"))
	otherObj := objectOf(t, filepath.Join(src, "etc/other"))
	first, second := min(toolObj, otherObj), max(toolObj, otherObj)
	for _, tc := range []struct {
		name    string
		damage  func(fx *fixture)
		object  string
		matches []error
	}{
		{"missing", func(fx *fixture) { must(t, os.Remove(filepath.Join(fx.objects, toolObj))) },
			toolObj, []error{mount.ErrMissingObject, fs.ErrNotExist}},
		{"altered", func(fx *fixture) {
			p := filepath.Join(fx.objects, otherObj)
			b, err := os.ReadFile(p)
			must(t, err)
			b[len(b)/2] ^= 0xff
			must(t, os.WriteFile(p, b, 0o644))
		}, otherObj, []error{mount.ErrDigestMismatch}},
		{"truncated", func(fx *fixture) { must(t, os.Truncate(filepath.Join(fx.objects, toolObj), 100)) },
			toolObj, []error{mount.ErrDigestMismatch}},
		// Two bad objects: the first in sorted order is named, always.
		{"two missing", func(fx *fixture) {
			must(t, os.Remove(filepath.Join(fx.objects, second)))
			must(t, os.Remove(filepath.Join(fx.objects, first)))
		}, first, []error{mount.ErrMissingObject}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := build(t, src)
			tc.damage(fx)
			mnt, tmp := mountpoint(t), t.TempDir()
			before := testutil.MountPoints(t)
			err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{
				BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects, TempDir: tmp,
			})
			var oe *mount.ObjectError
			if !errors.As(err, &oe) || oe.Object != tc.object || !errors.Is(err, mount.ErrObject) {
				t.Fatalf("%v, want *ObjectError for %s", err, tc.object)
			}
			for _, want := range tc.matches {
				if !errors.Is(err, want) {
					t.Errorf("error does not match %v: %v", want, err)
				}
			}
			if !strings.Contains(err.Error(), tc.object) {
				t.Errorf("message does not name the object: %v", err)
			}
			noLeftovers(t, before, tmp)
		})
	}
}

// Objects are searched in every basedir, in order, as overlayfs does.
func TestMountSeveralBaseDirs(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	// Move one object to a second store whose name needs escaping in a
	// legacy option string (the new API takes it verbatim).
	second := filepath.Join(t.TempDir(), "more,objects:2")
	obj := objectOf(t, filepath.Join(fx.src, "etc/other"))
	must(t, os.MkdirAll(filepath.Join(second, filepath.Dir(obj)), 0o755))
	must(t, os.Rename(filepath.Join(fx.objects, obj), filepath.Join(second, obj)))
	mnt := mountpoint(t)
	before := testutil.MountPoints(t)
	err := mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects})
	if !errors.Is(err, mount.ErrMissingObject) {
		t.Fatalf("object only in the second store, one store given: %v", err)
	}
	must(t, mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects, second}, Verify: mount.VerifyObjects}))
	fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
	must(t, mount.Unmount(mnt))
	noLeftovers(t, before, "")
}

func TestMountNoneMissingObjectFailsOnRead(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	mnt := mountpoint(t)
	must(t, mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyNone}))
	defer mount.Unmount(mnt)
	must(t, os.Remove(filepath.Join(fx.objects, objectOf(t, filepath.Join(fx.src, "usr/bin/tool")))))
	// tool and copy share the object: both fail, and never with data.
	for _, p := range []string{"usr/bin/tool", "usr/bin/copy"} {
		if b, err := os.ReadFile(filepath.Join(mnt, p)); err == nil {
			t.Errorf("%s: read %d bytes of a file whose object is gone", p, len(b))
		}
	}
	// Everything else reads fine: another external file, an inline one.
	for _, p := range []string{"etc/other", "etc/small"} {
		want, _ := os.ReadFile(filepath.Join(fx.src, p))
		if got, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v", p, len(got), err)
		}
	}
	// The comparison suite sees exactly those two files' content fail.
	diffs, err := fstest.CompareTrees(fx.src, mnt, fstest.Options{})
	must(t, err)
	var paths []string
	for _, d := range diffs {
		if d.What != "content" {
			t.Errorf("unexpected difference %v", d)
		}
		paths = append(paths, d.Path)
	}
	if !slices.Equal(paths, []string{"usr/bin/copy", "usr/bin/tool"}) {
		t.Errorf("content differences at %q, want the two files of the missing object", paths)
	}
}

func losetupJ(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-j", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// On ext4 the image is mounted file-backed (no loop device); on tmpfs
// the kernel answers ENOTBLK and the loop device fallback takes over,
// then goes away with the mount (autoclear).
func TestMountLoopDeviceFallback(t *testing.T) {
	testutil.RequireMountNS(t)
	testutil.RequireTool(t, "losetup")
	fx := build(t, sampleTree(t))
	before := testutil.MountPoints(t)

	mnt := mountpoint(t)
	must(t, mount.Mount(context.Background(), fx.image, mnt, mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects}))
	if out := losetupJ(t, fx.image); out != "" {
		t.Errorf("image on ext4 went through a loop device: %s", out)
	}
	must(t, mount.Unmount(mnt))

	tmpfs := t.TempDir()
	must(t, unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=16m"))
	defer unix.Unmount(tmpfs, unix.MNT_DETACH)
	img := filepath.Join(tmpfs, "image.cfs")
	b, err := os.ReadFile(fx.image)
	must(t, err)
	must(t, os.WriteFile(img, b, 0o644))
	beforeTmpfs := testutil.MountPoints(t)
	must(t, mount.Mount(context.Background(), img, mnt, mount.Options{
		BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects, ExpectedDigest: &fx.digest,
	}))
	fstest.AssertSameTree(t, fx.src, mnt, fstest.Options{})
	if out := losetupJ(t, img); out == "" {
		t.Error("no loop device backs the tmpfs image while mounted")
	}
	must(t, mount.Unmount(mnt))
	if out := losetupJ(t, img); out != "" {
		t.Errorf("loop device not released after unmount: %s", out)
	}
	noLeftovers(t, beforeTmpfs, "")
	must(t, unix.Unmount(tmpfs, 0))
	noLeftovers(t, before, "")
}

func TestMountWritable(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	upper, work := filepath.Join(t.TempDir(), "upper"), filepath.Join(t.TempDir(), "work")
	must(t, os.Mkdir(upper, 0o755))
	must(t, os.Mkdir(work, 0o755))
	mnt := mountpoint(t)
	before := testutil.MountPoints(t)
	must(t, mount.Mount(context.Background(), fx.image, mnt, mount.Options{
		BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects, UpperDir: upper, WorkDir: work, Writable: true,
	}))
	must(t, os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("new\n"), 0o644))
	f, err := os.OpenFile(filepath.Join(mnt, "usr/bin/tool"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("appended")
	must(t, errors.Join(err, f.Close()))
	must(t, mount.Unmount(mnt))
	noLeftovers(t, before, "")

	if b, err := os.ReadFile(filepath.Join(upper, "etc/new")); err != nil || string(b) != "new\n" {
		t.Errorf("new file not in the upper dir: %q %v", b, err)
	}
	want := append(bytes.Repeat([]byte("binary!"), 3000), "appended"...)
	if b, err := os.ReadFile(filepath.Join(upper, "usr/bin/tool")); err != nil || !bytes.Equal(b, want) {
		t.Errorf("copied-up file: %d bytes %v, want %d", len(b), err, len(want))
	}
	if b, _ := os.ReadFile(filepath.Join(fx.objects, objectOf(t, filepath.Join(fx.src, "usr/bin/copy")))); bytes.Contains(b, []byte("appended")) {
		t.Error("a write through the overlay reached the object store")
	}
}

// A step that fails after earlier ones succeeded leaves nothing behind.
func TestMountRollback(t *testing.T) {
	testutil.RequireMountNS(t)
	fx := build(t, sampleTree(t))
	tmp := t.TempDir()
	before := testutil.MountPoints(t)
	for _, tc := range []struct {
		name   string
		target string
		opts   mount.Options
		want   string
	}{
		{"target missing", filepath.Join(t.TempDir(), "nope"), mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyNone}, "mount overlay"},
		{"basedir missing", mountpoint(t), mount.Options{BaseDirs: []string{filepath.Join(t.TempDir(), "nope")}, Verify: mount.VerifyNone}, "datadir+"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TempDir = tmp
			err := mount.Mount(context.Background(), fx.image, tc.target, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, unix.ENOENT) {
				t.Fatalf("%v, want an ENOENT error about %s", err, tc.want)
			}
			noLeftovers(t, before, tmp)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mount.Mount(ctx, fx.image, mountpoint(t), mount.Options{BaseDirs: []string{fx.objects}, Verify: mount.VerifyObjects, TempDir: tmp}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	noLeftovers(t, before, tmp)
}

func TestUnmountNotMounted(t *testing.T) {
	testutil.RequireMountNS(t)
	if err := mount.Unmount(t.TempDir()); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("unmount of a plain directory: %v, want EINVAL", err)
	}
}
