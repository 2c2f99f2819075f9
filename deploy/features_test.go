package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-dev/cfs/composefs/mount"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/bls"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// TestEtcMerge: the new deployment's /etc is B's defaults plus the local
// changes made in A's /etc, case by case.
func TestEtcMerge(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	specA, specB := defaultSpec("1.0"), defaultSpec("2.0")
	specA.etc = map[string]etcFile{
		"modified.conf":   {content: "v1\n"},
		"deleted.conf":    {content: "v1\n"},
		"upstream.conf":   {content: "v1\n"},
		"both.conf":       {content: "v1\n"},
		"gone.conf":       {content: "v1\n"},
		"same.conf":       {content: "v1\n"},
		"mode-local.conf": {content: "v1\n", mode: 0o644},
		"mode-up.conf":    {content: "v1\n", mode: 0o644},
		"xattr-local":     {content: "v1\n"},
		"xattr-up":        {content: "v1\n", xattrs: map[string]string{"user.cfs": "1"}},
		"owner.conf":      {content: "v1\n"},
		"secret.conf":     {content: "s\n", mode: 0o600},
		"link":            {symlink: "same.conf"},
	}
	specB.etc = map[string]etcFile{
		"modified.conf":   {content: "v1\n"},
		"deleted.conf":    {content: "v1\n"},
		"upstream.conf":   {content: "v2\n"},
		"both.conf":       {content: "theirs\n"},
		"new.conf":        {content: "new\n"},
		"same.conf":       {content: "v1\n"},
		"mode-local.conf": {content: "v1\n", mode: 0o644},
		"mode-up.conf":    {content: "v1\n", mode: 0o640},
		"xattr-local":     {content: "v1\n"},
		"xattr-up":        {content: "v1\n", xattrs: map[string]string{"user.cfs": "2"}},
		"owner.conf":      {content: "v1\n"},
		"secret.conf":     {content: "s\n", mode: 0o600},
		"link":            {symlink: "new.conf"},
	}
	_, resA := f.buildPullSwitch(s, specA, deploy.SwitchOptions{})
	etcA := filepath.Join(f.deployDir(resA.Deployment), "etc")

	// The checkout of A's defaults kept modes, xattrs and links.
	if st, _ := os.Stat(filepath.Join(etcA, "secret.conf")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("secret.conf mode in A: %v", st)
	}
	if got := getXattr(t, filepath.Join(etcA, "xattr-up"), "user.cfs"); got != "1" {
		t.Errorf("xattr in A: %q", got)
	}

	// Local changes.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(etcA, "modified.conf"), []byte("local\n"), 0o644))
	must(os.Remove(filepath.Join(etcA, "deleted.conf")))
	must(os.WriteFile(filepath.Join(etcA, "both.conf"), []byte("mine\n"), 0o644))
	must(os.WriteFile(filepath.Join(etcA, "added.conf"), []byte("added\n"), 0o644))
	must(os.Mkdir(filepath.Join(etcA, "added.d"), 0o750))
	must(os.WriteFile(filepath.Join(etcA, "added.d/x.conf"), []byte("x\n"), 0o644))
	must(os.Chmod(filepath.Join(etcA, "mode-local.conf"), 0o600))
	must(setXattr(filepath.Join(etcA, "xattr-local"), "user.local", "yes"))
	must(os.Lchown(filepath.Join(etcA, "owner.conf"), 1234, 5678))
	must(os.Symlink("/dev/null", filepath.Join(etcA, "masked")))

	_, resB := f.buildPullSwitch(s, specB, deploy.SwitchOptions{})
	etcB := filepath.Join(f.deployDir(resB.Deployment), "etc")

	type want struct {
		content string // "" = absent (or not checked for symlinks)
		mode    os.FileMode
		xattr   [2]string
		owner   [2]int
		link    string
	}
	cases := map[string]want{
		"modified.conf":   {content: "local\n"},
		"deleted.conf":    {},
		"upstream.conf":   {content: "v2\n"},
		"both.conf":       {content: "mine\n"},
		"new.conf":        {content: "new\n"},
		"gone.conf":       {},
		"same.conf":       {content: "v1\n"},
		"added.conf":      {content: "added\n"},
		"added.d/x.conf":  {content: "x\n"},
		"mode-local.conf": {content: "v1\n", mode: 0o600},
		"mode-up.conf":    {content: "v1\n", mode: 0o640},
		"secret.conf":     {content: "s\n", mode: 0o600},
		"xattr-local":     {content: "v1\n", xattr: [2]string{"user.local", "yes"}},
		"xattr-up":        {content: "v1\n", xattr: [2]string{"user.cfs", "2"}},
		"owner.conf":      {content: "v1\n", owner: [2]int{1234, 5678}},
		"link":            {link: "new.conf"},
		"masked":          {link: "/dev/null"},
	}
	for name, w := range cases {
		p := filepath.Join(etcB, name)
		if w.link != "" {
			if got, err := os.Readlink(p); err != nil || got != w.link {
				t.Errorf("%s: link %q, want %q (%v)", name, got, w.link, err)
			}
			continue
		}
		b, err := os.ReadFile(p)
		if w.content == "" {
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: present, want absent", name)
			}
			continue
		}
		if err != nil || string(b) != w.content {
			t.Errorf("%s: %q, want %q (%v)", name, b, w.content, err)
			continue
		}
		st, _ := os.Lstat(p)
		if w.mode != 0 && st.Mode().Perm() != w.mode {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), w.mode)
		}
		if w.xattr[0] != "" {
			if got := getXattr(t, p, w.xattr[0]); got != w.xattr[1] {
				t.Errorf("%s: xattr %s=%q, want %q", name, w.xattr[0], got, w.xattr[1])
			}
		}
		if w.owner[0] != 0 {
			sys := st.Sys().(*syscall.Stat_t)
			if int(sys.Uid) != w.owner[0] || int(sys.Gid) != w.owner[1] {
				t.Errorf("%s: owner %d:%d, want %v", name, sys.Uid, sys.Gid, w.owner)
			}
		}
	}
	if st, err := os.Stat(filepath.Join(etcB, "added.d")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("added.d: %v %v", st, err)
	}
	e := resB.Etc
	if !slices.Contains(e.Conflicts, "both.conf") || !slices.Contains(e.Deleted, "deleted.conf") ||
		!slices.Contains(e.Added, "added.conf") || !slices.Contains(e.Modified, "modified.conf") || slices.Contains(e.Conflicts, "upstream.conf") {
		t.Errorf("etc report: %+v", e)
	}
}

// TestStageAndFinalize: --stage prepares B without touching the entries;
// status lists it staged; finalize makes it the default.
func TestStageAndFinalize(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	if _, err := s.Finalize(ctx); !errors.Is(err, deploy.ErrNotStaged) {
		t.Errorf("finalize with nothing staged: %v", err)
	}
	entriesBefore := snapshot(t, filepath.Join(f.root, "boot/loader"))
	idB, res := f.buildPullSwitch(s, defaultSpec("2.0"), deploy.SwitchOptions{Stage: true, Kargs: []string{"debug"}})
	if !res.Staged || res.Entry != "" {
		t.Fatalf("staged result: %+v", res)
	}
	requireUnchanged(t, entriesBefore, filepath.Join(f.root, "boot/loader"))
	st := f.status(s)
	if len(st.Deployments) != 2 || !st.Deployments[0].Staged || !st.Deployments[0].Pending || st.Deployments[0].Commit != idB.String() ||
		st.Deployments[0].BootCounter != nil || !st.Deployments[1].Default || st.Deployments[1].Commit != idA.String() {
		t.Fatalf("status while staged: %+v", st)
	}
	if err := s.Pin(ctx, 0, true); err == nil {
		t.Error("pinning the staged deployment succeeded")
	}
	// cleanup keeps the staged deployment and its boot files.
	if _, err := s.Cleanup(ctx, deploy.CleanupOptions{}); err != nil {
		t.Fatal(err)
	}
	fin, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fin.Commit != idB.String() || fin.Entry != "cfs-1+3.conf" || !strings.Contains(fin.Options, "debug") {
		t.Errorf("finalize: %+v", fin)
	}
	bs := checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idB.String(), idA.String()}) {
		t.Errorf("after finalize: %v", bs.commits)
	}
	if _, err := os.Stat(filepath.Join(f.root, "run/cfs/staged.json")); !os.IsNotExist(err) {
		t.Errorf("staged record still there: %v", err)
	}
	if st := f.status(s); st.Deployments[0].Staged || !st.Deployments[0].Default {
		t.Errorf("status after finalize: %+v", st.Deployments[0])
	}

	// Finalize re-verifies: a staged deployment whose image was altered is
	// not installed.
	f.buildPullSwitch(s, defaultSpec("3.0"), deploy.SwitchOptions{Stage: true})
	st = f.status(s)
	img := filepath.Join(f.deployDir(st.Deployments[0].Deployment), deploy.ImageFile)
	corrupt(t, img)
	before := snapshot(t, f.root)
	if _, err := s.Finalize(ctx); !errors.Is(err, deploy.ErrVerification) {
		t.Errorf("finalize of a corrupted staged image: %v", err)
	}
	requireUnchanged(t, before, f.root)
}

// TestUpgrade follows the deployment's ref; a second upgrade is a no-op.
func TestUpgrade(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	if _, err := s.Upgrade(ctx, deploy.SwitchOptions{}); !errors.Is(err, deploy.ErrNoDeployment) {
		t.Errorf("upgrade with nothing deployed: %v", err)
	}
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	res, err := s.Upgrade(ctx, deploy.SwitchOptions{})
	if err != nil || res.Changed || !strings.Contains(res.Message, "already") {
		t.Fatalf("upgrade without news: %+v, %v", res, err)
	}
	idB := f.build(defaultSpec("2.0"))
	f.pull(s)
	res, err = s.Upgrade(ctx, deploy.SwitchOptions{})
	if err != nil || !res.Changed || res.Commit != idB.String() || res.Origin != testRef {
		t.Fatalf("upgrade: %+v, %v", res, err)
	}
	bs := checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idB.String(), idA.String()}) {
		t.Errorf("after upgrade: %v", bs.commits)
	}
	if res, err := s.Upgrade(ctx, deploy.SwitchOptions{}); err != nil || res.Changed {
		t.Errorf("second upgrade: %+v, %v", res, err)
	}
}

// TestKargs: --karg and --karg-delete edit the arguments carried over from
// the default entry; cfs-managed arguments cannot be set.
func TestKargs(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{Kargs: []string{"root=LABEL=my root", "console=tty0"}})
	for _, opts := range []deploy.SwitchOptions{
		{Kargs: []string{"composefs=0000"}},
		{Kargs: []string{"cfs.deployment=/x"}},
		{KargsDelete: []string{"nosuch"}},
		{Kargs: []string{`bad"quote`}},
	} {
		before := snapshot(t, f.root)
		_, err := s.Switch(ctx, testRef, opts)
		wantErr(t, err, deploy.ErrBadKarg)
		requireUnchanged(t, before, f.root)
	}
	_, res := f.buildPullSwitch(s, defaultSpec("2.0"), deploy.SwitchOptions{Kargs: []string{"console=ttyS0"}})
	if !strings.HasPrefix(res.Options, `root="LABEL=my root" console=tty0 console=ttyS0 composefs=`) {
		t.Errorf("options %q", res.Options)
	}
	_, res = f.buildPullSwitch(s, defaultSpec("3.0"), deploy.SwitchOptions{KargsDelete: []string{"console"}})
	if !strings.HasPrefix(res.Options, `root="LABEL=my root" composefs=`) || strings.Count(res.Options, "composefs=") != 1 {
		t.Errorf("options %q", res.Options)
	}
}

// TestBootedAndBootCounting: the booted deployment (from the kernel
// command line) is kept and flagged; boot counter states are reported and
// preserved, and a bad entry loses the default.
func TestBootedAndBootCounting(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	idA, resA := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	idB, _ := f.buildPullSwitch(s, defaultSpec("2.0"), deploy.SwitchOptions{})
	// Booted into A (the switch to B is pending), A's entry blessed.
	entries := filepath.Join(f.root, "boot/loader/entries")
	if err := os.Rename(filepath.Join(entries, "cfs-0+3.conf"), filepath.Join(entries, "cfs-0.conf")); err != nil {
		t.Fatal(err)
	}
	line := "BOOT_IMAGE=/vmlinuz root=UUID=1 cfs.deployment=" + resA.Deployment
	f.opts.Cmdline = &line
	s = f.open()
	st := f.status(s)
	if !st.Deployments[1].Booted || st.Deployments[1].Commit != idA.String() || !st.Deployments[0].Pending ||
		st.Deployments[1].BootCounter.State != "blessed" {
		t.Fatalf("status booted in A: %+v", st)
	}
	// Switch to C: C, then B (previous default), then A (booted).
	idC, _ := f.buildPullSwitch(s, defaultSpec("3.0"), deploy.SwitchOptions{})
	bs := checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idC.String(), idB.String(), idA.String()}) {
		t.Fatalf("boot order: %v", bs.commits)
	}
	if got := entryNames(t, f.root); !reflect.DeepEqual(got, []string{"cfs-0.conf", "cfs-1+3.conf", "cfs-2+3.conf"}) {
		t.Errorf("kept entries lost their boot counting state: %v", got)
	}
	// The boot loader tried C three times: +0-3 is bad and sorts last.
	if err := os.Rename(filepath.Join(entries, "cfs-2+3.conf"), filepath.Join(entries, "cfs-2+0-3.conf")); err != nil {
		t.Fatal(err)
	}
	st = f.status(s)
	last := st.Deployments[len(st.Deployments)-1]
	if last.Commit != idC.String() || last.BootCounter.State != "bad" || *last.BootCounter.TriesDone != 3 || st.Deployments[0].Commit != idB.String() {
		t.Errorf("status with C bad: %+v", st)
	}
	// Booted via booted.json instead of the command line.
	if err := os.MkdirAll(filepath.Join(f.root, "run/cfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(deploy.BootedRecord{Deployment: st.Deployments[0].Deployment})
	if err := os.WriteFile(filepath.Join(f.root, "run/cfs/booted.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := f.status(s); !st.Deployments[0].Booted || st.Deployments[0].Commit != idB.String() {
		t.Errorf("booted.json not honoured: %+v", st.Deployments[0])
	}
	if _, err := s.Cleanup(ctx, deploy.CleanupOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDeploymentMounts mounts a deployment's regenerated image over the
// sysroot repository's objects (what the initramfs does) and reads files.
func TestDeploymentMounts(t *testing.T) {
	testutil.RequireMountNS(t)
	f := newFixture(t)
	s := f.open()
	id, res := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	m := readCommit(t, s.Repo(), id)
	target := t.TempDir()
	img := filepath.Join(f.deployDir(res.Deployment), deploy.ImageFile)
	err := mount.Mount(context.Background(), img, target, mount.Options{
		BaseDirs: []string{filepath.Join(f.root, deploy.RepoDir, "objects")}, ExpectedDigest: &m.Image.Digest,
		Verify: mount.VerifyObjects, TempDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mount.Unmount(target)
	want := defaultSpec("1.0").files["usr/bin/app"]
	if got := fileContent(t, filepath.Join(target, "usr/bin/app")); got != want {
		t.Errorf("usr/bin/app = %q", got)
	}
	if got := fileContent(t, filepath.Join(target, "usr/etc/app/app.conf")); got != "setting=1.0\n" {
		t.Errorf("usr/etc/app/app.conf = %q", got)
	}
}

// TestForeignEntriesKept: entries cfs did not write survive every rewrite
// byte for byte, and do not count as deployments.
func TestForeignEntriesKept(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	ctx := context.Background()
	entries := filepath.Join(f.root, "boot/loader/entries")
	if err := os.MkdirAll(entries, 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := map[string]string{
		"other-os.conf": "title Other\nsort-key zzz\nlinux /other/vmlinuz\n",
		"broken.conf":   "title no linux line\n",
		"README":        "not an entry\n",
	}
	for n, c := range foreign {
		if err := os.WriteFile(filepath.Join(entries, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	f.buildPullSwitch(s, defaultSpec("2.0"), deploy.SwitchOptions{})
	if _, err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cleanup(ctx, deploy.CleanupOptions{}); err != nil {
		t.Fatal(err)
	}
	for n, c := range foreign {
		if got := fileContent(t, filepath.Join(entries, n)); got != c {
			t.Errorf("%s changed: %q", n, got)
		}
	}
	st := f.status(s)
	if len(st.Deployments) != 2 || st.Deployments[0].Commit != idA.String() {
		t.Errorf("status: %+v", st)
	}
	// systemd-boot order over everything: cfs entries (sort-key cfs) first.
	loaded, _ := bls.LoadDir(ctx, filepath.Join(f.root, "boot"))
	if len(loaded) < 3 || loaded[0].Entry.SortKey != deploy.SortKey || loaded[2].FileName != "other-os.conf" {
		t.Errorf("boot loader order: %v", loaded)
	}
}

// TestRecoverIgnoresAndRemovesStaging: leftovers of an interrupted
// operation are never taken for deployments and are removed by the next
// operation.
func TestRecoverIgnoresAndRemovesStaging(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	idA, _ := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	junk := []string{
		"boot/loader/entries.new/cfs-9+3.conf",
		"cfs/deploy/os/deploy/.new-" + idA.String() + ".7/image.cfs",
		"boot/cfs/os/.new-junk-123/vmlinuz",
		"cfs/tmp/etc-123/x",
	}
	for _, p := range junk {
		full := filepath.Join(f.root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.status(s); len(st.Deployments) != 1 {
		t.Errorf("staging directories counted as deployments: %+v", st)
	}
	res, err := s.Cleanup(context.Background(), deploy.CleanupOptions{DryRun: true})
	if err != nil || len(res.Deployments) != 0 || len(res.BootFiles) != 0 {
		t.Errorf("cleanup considered staging state: %+v %v", res, err)
	}
	noLeftovers(t, f.root)
	// The next switch uses serial 1 (0 is taken, the staging one is gone).
	f.build(defaultSpec("1.0"))
	res2, err := s.Switch(context.Background(), idA.String(), deploy.SwitchOptions{})
	if err != nil || !strings.HasSuffix(res2.Deployment, idA.String()+".1") {
		t.Errorf("redeploy of A: %+v %v", res2, err)
	}
}
