package deploy_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// deployedA returns a fixture with commit A deployed.
func deployedA(t *testing.T) (*fixture, *deploy.Sysroot, commit.ID) {
	f := newFixture(t)
	s := f.open()
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{Kargs: []string{"root=UUID=1234"}})
	return f, s, idA
}

// refuse switches to rev, expects an error, and checks that nothing in
// the sysroot changed and that A is still the bootable default.
func refuse(t *testing.T, f *fixture, s *deploy.Sysroot, idA commit.ID, rev string, targets ...error) error {
	t.Helper()
	before := snapshot(t, f.root)
	_, err := s.Switch(context.Background(), rev, deploy.SwitchOptions{})
	wantErr(t, err, targets...)
	t.Logf("refused: %v", err)
	requireUnchanged(t, before, f.root)
	bs := checkBootable(t, s, f.root)
	if len(bs.commits) != 1 || bs.commits[0] != idA.String() {
		t.Errorf("after the refusal the entries are %v, want only A", bs.commits)
	}
	return err
}

func TestRefuseUnsigned(t *testing.T) {
	f, s, idA := deployedA(t)
	// B is in the sysroot repository (built there directly), but its
	// signature file is gone.
	idB := f.buildInto(s.Repo(), "os/other", defaultSpec("2.0"), f.signer)
	if err := os.Remove(filepath.Join(s.Repo().Path(), "commits", idB.String()+".sig")); err != nil {
		t.Fatal(err)
	}
	refuse(t, f, s, idA, idB.String(), deploy.ErrVerification, sign.ErrNoSignature)
}

func TestRefuseUntrusted(t *testing.T) {
	f, s, idA := deployedA(t)
	other, _ := newSigner(t)
	idB := f.buildInto(s.Repo(), "os/other", defaultSpec("2.0"), other)
	err := refuse(t, f, s, idA, idB.String(), deploy.ErrVerification, sign.ErrUnknownKey)
	var ve *sign.VerificationError
	if !errors.As(err, &ve) {
		t.Errorf("want a *sign.VerificationError inside, got %T", err)
	}
}

func TestRefuseRevoked(t *testing.T) {
	f, s, _ := deployedA(t)
	idB := f.buildInto(s.Repo(), "os/other", defaultSpec("2.0"), f.signer)
	pub, _ := os.ReadFile(filepath.Join(f.keysDir, "release.pub"))
	if err := os.WriteFile(filepath.Join(f.root, deploy.RevokedDir, "release.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	// The revoked key is the only trusted one: loading the trust store
	// fails, which refuses as well.
	before := snapshot(t, f.root)
	_, err := s.Switch(context.Background(), idB.String(), deploy.SwitchOptions{})
	if err == nil {
		t.Fatal("switch with the only key revoked succeeded")
	}
	requireUnchanged(t, before, f.root)
	// Status reports A's signature as invalid now.
	if st := f.status(s); st.Deployments[0].Signature.Valid || st.Deployments[0].Signature.Error == "" {
		t.Errorf("status after revocation: %+v", st.Deployments[0].Signature)
	}
}

// TestRefuseTamperedDump alters the stored dump object of B: its digest
// no longer matches the signed one.
func TestRefuseTamperedDump(t *testing.T) {
	f, s, idA := deployedA(t)
	idB := f.build(defaultSpec("2.0"))
	f.pull(s)
	mB := readCommit(t, s.Repo(), idB)
	p := s.Repo().Objects.Path(mB.Dump.Digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// Same size, still a valid dump: one mtime second changed.
	i := strings.Index(string(b), " 1700000002")
	if i < 0 {
		t.Fatalf("no mtime to alter in the dump:\n%s", b)
	}
	b[i+10] = '9'
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = refuse(t, f, s, idA, testRef, deploy.ErrVerification)
	var dm *deploy.DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != mB.Dump.Digest {
		t.Errorf("want a digest mismatch on the dump, got %v", err)
	}
}

// TestRefuseImageDigestMismatch signs (with the trusted key) metadata
// whose image digest is not the image of its dump: the regenerated image
// must not be accepted.
func TestRefuseImageDigestMismatch(t *testing.T) {
	f, s, idA := deployedA(t)
	idB := f.build(defaultSpec("2.0"))
	f.pull(s)
	m := *readCommit(t, s.Repo(), idB)
	m.Image.Digest = readCommit(t, s.Repo(), idA).Image.Digest
	m.Parent = nil
	canonical, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	env, err := sign.Sign(context.Background(), commit.PayloadType, canonical, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	envBytes, _ := env.Marshal()
	id, err := s.Repo().WriteCommit(canonical, envBytes)
	if err != nil {
		t.Fatal(err)
	}
	err = refuse(t, f, s, idA, id.String(), deploy.ErrVerification)
	var dm *deploy.DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != m.Image.Digest || !strings.Contains(dm.What, "image") {
		t.Errorf("want an image digest mismatch, got %v", err)
	}
}

func TestRefuseMissingObject(t *testing.T) {
	f, s, idA := deployedA(t)
	idB := f.build(defaultSpec("2.0"))
	f.pull(s)
	objsA := objectsOf(t, s.Repo(), idA)
	var victim fsverity.Digest
	for d := range objectsOf(t, s.Repo(), idB) {
		if _, ok := objsA[d]; !ok {
			victim = d
			break
		}
	}
	if victim.IsZero() {
		t.Fatal("B has no object of its own")
	}
	if err := os.Remove(s.Repo().Objects.Path(victim)); err != nil {
		t.Fatal(err)
	}
	err := refuse(t, f, s, idA, testRef, deploy.ErrMissingObject)
	if !strings.Contains(err.Error(), victim.String()) {
		t.Errorf("error does not name the missing object: %v", err)
	}
}

// TestRefuseCorruptObject alters an object only B uses: hashing it before
// deployment catches it.
func TestRefuseCorruptObject(t *testing.T) {
	f, s, idA := deployedA(t)
	idB := f.build(defaultSpec("2.0"))
	f.pull(s)
	objsA := objectsOf(t, s.Repo(), idA)
	for d := range objectsOf(t, s.Repo(), idB) {
		if _, ok := objsA[d]; !ok {
			corrupt(t, s.Repo().Objects.Path(d))
			break
		}
	}
	refuse(t, f, s, idA, testRef, deploy.ErrVerification, objstore.ErrCorrupt)
}

// TestRefuseCorruptKernel: B shares A's kernel object (so object
// verification, which trusts what A already uses, skips it) but has a new
// initramfs, so the boot files are copied again from the objects: the
// copy is hashed and the altered kernel refused.
func TestRefuseCorruptKernel(t *testing.T) {
	f, s, idA := deployedA(t)
	spec := defaultSpec("2.0")
	spec.initramfs = 2
	f.build(spec)
	f.pull(s)
	mA := readCommit(t, s.Repo(), idA)
	corrupt(t, s.Repo().Objects.Path(mA.Kernel.Vmlinuz.Digest))
	err := refuse(t, f, s, idA, testRef, deploy.ErrVerification)
	var dm *deploy.DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != mA.Kernel.Vmlinuz.Digest || !strings.Contains(dm.What, "vmlinuz") {
		t.Errorf("want a kernel digest mismatch, got %v", err)
	}
	// With --verify-all the object check itself catches it.
	_, err = s.Switch(context.Background(), testRef, deploy.SwitchOptions{VerifyAll: true})
	wantErr(t, err, deploy.ErrVerification, objstore.ErrCorrupt)
}

func corrupt(t testing.TB, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mountBoot makes a file system of the given type and size and
// loop-mounts it at root/boot (in the test's private mount namespace).
func mountBoot(t *testing.T, dir, root, mkfs string, size string) {
	t.Helper()
	testutil.RequireMountNS(t)
	testutil.RequireTool(t, mkfs)
	img := filepath.Join(dir, "boot.img")
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"truncate", "-s", size, img},
		{mkfs, img},
		{"mount", "-o", "loop", img, filepath.Join(root, "boot")},
	} {
		if args[0] == "mkfs.ext4" {
			args = []string{"mkfs.ext4", "-q", img}
		}
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", filepath.Join(root, "boot")).Run() })
}

// TestRefuseNoSpaceOnBoot mounts a 2 MiB ext4 file system at boot/ and
// deploys a commit whose kernel does not fit.
func TestRefuseNoSpaceOnBoot(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "sysroot")
	mountBoot(t, dir, root, "mkfs.ext4", "2M")
	f := newFixtureAt(t, dir, root)
	s := f.open()
	idA, resA := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	// boot/ is its own file system: entry paths are relative to it.
	if e := readEntry(t, root, resA.Entry); !strings.HasPrefix(e.Linux, "/cfs/os/") {
		t.Errorf("linux path %s on a separate boot partition", e.Linux)
	}
	checkBootable(t, s, root)

	spec := defaultSpec("2.0")
	spec.kernel, spec.kernelLen = 9, 3<<20 // 3 MiB: does not fit
	f.build(spec)
	f.pull(s)
	err := refuse(t, f, s, idA, testRef, syscall.ENOSPC)
	if errors.Is(err, deploy.ErrVerification) {
		t.Errorf("no space is not a verification failure: %v", err)
	}
}

// TestVfatBootPartition runs switch, rollback and cleanup with boot/ on
// vfat (an EFI system partition): entry names with boot counters, the
// RENAME_EXCHANGE of the entries directories, directory fsyncs.
func TestVfatBootPartition(t *testing.T) {
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\tvfat\n") {
		// Not a missing tool: the running kernel has no vfat
		// (CONFIG_VFAT_FS), which no package installs.
		t.Skip("the running kernel does not support vfat (not in /proc/filesystems)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "sysroot")
	mountBoot(t, dir, root, "mkfs.vfat", "32M")
	f := newFixtureAt(t, dir, root)
	s := f.open()
	ctx := context.Background()
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	specB := defaultSpec("2.0")
	specB.kernel = 2
	idB, _ := f.buildPullSwitch(s, specB, deploy.SwitchOptions{})
	if bs := checkBootable(t, s, root); !slices.Equal(bs.commits, []string{idB.String(), idA.String()}) {
		t.Fatalf("on vfat: %v", bs.commits)
	}
	if _, err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if bs := checkBootable(t, s, root); !slices.Equal(bs.commits, []string{idA.String(), idB.String()}) {
		t.Fatalf("rollback on vfat: %v", bs.commits)
	}
	idC, _ := f.buildPullSwitch(s, defaultSpec("3.0"), deploy.SwitchOptions{})
	if _, err := s.Cleanup(ctx, deploy.CleanupOptions{}); err != nil {
		t.Fatal(err)
	}
	if bs := checkBootable(t, s, root); !slices.Equal(bs.commits, []string{idC.String(), idA.String()}) {
		t.Fatalf("cleanup on vfat: %v", bs.commits)
	}
	if des, _ := os.ReadDir(filepath.Join(root, "boot/cfs/os")); len(des) != 1 {
		t.Errorf("boot file directories on vfat after cleanup: %d, want 1 (A and C share a kernel)", len(des))
	}
	noLeftovers(t, root)
}

// TestPullRefusals: pull verifies the signature before copying anything
// and every object it copies; the ref is written last.
func TestPullRefusals(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	trust, err := s.TrustStore()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSigner(t)
	f.buildInto(f.src, "os/untrusted", defaultSpec("1.0"), other)
	before := snapshot(t, f.root)
	_, err = pull.Pull(ctx, s.Repo(), f.src.Path(), "os/untrusted", pull.Options{Trust: trust})
	wantErr(t, err, pull.ErrVerification, sign.ErrUnknownKey)
	requireUnchanged(t, before, f.root)

	// A corrupt object in the source: refused, and no ref.
	id := f.build(defaultSpec("1.0"))
	m := readCommit(t, f.src, id)
	corrupt(t, f.src.Objects.Path(m.Kernel.Initramfs.Digest))
	_, err = pull.Pull(ctx, s.Repo(), f.src.Path(), testRef, pull.Options{Trust: trust})
	wantErr(t, err, pull.ErrVerification)
	if _, err := s.Repo().ReadRef(testRef); err == nil || s.Repo().HasCommit(id) {
		t.Error("a refused pull wrote the ref or the commit")
	}
	if hasObject(s.Repo(), m.Kernel.Initramfs.Digest) {
		t.Error("the corrupt object was stored")
	}

	// Restored: the pull goes through, and every object is there.
	_ = os.Remove(f.src.Objects.Path(m.Kernel.Initramfs.Digest))
	f.build(defaultSpec("1.0")) // same tree: the builder stores the object again
	res := f.pull(s)
	if res.Commit.String() == "" || res.Fetched == 0 {
		t.Fatalf("pull: %+v", res)
	}
	for d := range objectsOf(t, s.Repo(), res.Commit) {
		if err := s.Repo().Objects.Verify(ctx, d); err != nil {
			t.Error(err)
		}
	}
	mm := readCommit(t, s.Repo(), res.Commit)
	if !hasObject(s.Repo(), mm.Image.Digest) || !hasObject(s.Repo(), mm.Dump.Digest) {
		t.Error("image or dump object not pulled")
	}
	// Pulling again fetches nothing.
	again := f.pull(s)
	if again.Fetched != 0 || again.Commit != res.Commit {
		t.Errorf("second pull: %+v", again)
	}
	// A remote source is not supported yet.
	if _, err := pull.Pull(ctx, s.Repo(), "https://example.com/repo", testRef, pull.Options{Trust: trust}); !errors.Is(err, pull.ErrUnsupportedSource) {
		t.Errorf("remote source: %v", err)
	}
}
