package deploy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/bls"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/cli"
	"github.com/cfs-dev/cfs/internal/testutil"
)

const testRef = "os/x86_64/stable"

func TestMain(m *testing.M) {
	// Helper mode: the crash tests run the cfs-deploy CLI in a child
	// process of the test binary.
	if args := os.Getenv("CFS_DEPLOY_TEST_CLI"); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		root := cli.NewDeployCmd()
		root.SetArgs(argv)
		os.Exit(cli.RunDeploy(root))
	}
	os.Exit(testutil.RunInMountNS(m))
}

// fixture is a sysroot in a temporary directory, with a source repository
// that commits are built into and pulled from.
type fixture struct {
	t       testing.TB
	dir     string
	root    string // the sysroot
	src     *repo.Repo
	signer  *sign.Signer
	keysDir string
	opts    deploy.OpenOptions
	ts      int64
}

func newSigner(t testing.TB) (*sign.Signer, []byte) {
	t.Helper()
	priv, pub, err := sign.Keygen("", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.ParseSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	testutil.RequireRoot(t) // owners, xattrs and device nodes of /etc
	dir := t.TempDir()
	return newFixtureAt(t, dir, filepath.Join(dir, "sysroot"))
}

func newFixtureAt(t testing.TB, dir, root string) *fixture {
	t.Helper()
	signer, pub := newSigner(t)
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "release.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := repo.Init(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	if err := deploy.Init(context.Background(), root, deploy.InitOptions{Stateroot: "os", TrustedKeys: keys}); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, dir: dir, root: root, src: src, signer: signer, keysDir: keys, ts: 1700000000}
}

func (f *fixture) open() *deploy.Sysroot {
	f.t.Helper()
	s, err := deploy.Open(f.root, f.opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// etcFile is a file of /usr/etc in a generated tree.
type etcFile struct {
	content string
	mode    os.FileMode
	xattrs  map[string]string
	symlink string
}

// treeSpec describes a generated OS tree.
type treeSpec struct {
	version   string
	kernel    int64 // seed of the kernel's content
	initramfs int64 // seed of the initramfs content
	kernelLen int   // bytes (default 8192)
	files     map[string]string
	etc       map[string]etcFile
}

func defaultSpec(version string) treeSpec {
	return treeSpec{
		version:   version,
		kernel:    1,
		initramfs: 1,
		files: map[string]string{
			"usr/bin/app":              "#!/bin/sh\necho app " + version + "\n" + strings.Repeat("x", 100),
			"usr/lib/os-release":       "ID=cfstest\nVERSION_ID=" + version + "\n",
			"usr/share/data.bin":       strings.Repeat("shared data that every version has\n", 20),
			"usr/share/ver/" + version: strings.Repeat(version, 50),
		},
		etc: map[string]etcFile{
			"hostname":     {content: "cfstest\n"},
			"app/app.conf": {content: "setting=" + version + "\n"},
		},
	}
}

func randomBytes(seed int64, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeTree(t testing.TB, dir string, spec treeSpec) {
	t.Helper()
	kdir := filepath.Join(dir, "usr/lib/modules/6.1.0-cfs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(kdir, 0o755))
	klen := spec.kernelLen
	if klen == 0 {
		klen = 8192
	}
	must(os.WriteFile(filepath.Join(kdir, "vmlinuz"), randomBytes(spec.kernel, klen), 0o644))
	must(os.WriteFile(filepath.Join(kdir, "initramfs.img"), randomBytes(1000+spec.initramfs, 4096), 0o644))
	for p, c := range spec.files {
		must(os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644))
	}
	etc := filepath.Join(dir, "usr/etc")
	must(os.MkdirAll(etc, 0o755))
	for p, e := range spec.etc {
		full := filepath.Join(etc, p)
		must(os.MkdirAll(filepath.Dir(full), 0o755))
		if e.symlink != "" {
			must(os.Symlink(e.symlink, full))
			continue
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		must(os.WriteFile(full, []byte(e.content), mode))
		must(os.Chmod(full, mode))
		for k, v := range e.xattrs {
			must(setXattr(full, k, v))
		}
	}
}

// build builds a commit of spec into r (the source repository by
// default), signed by signer (the trusted one by default).
func (f *fixture) buildInto(r *repo.Repo, ref string, spec treeSpec, signer *sign.Signer) commit.ID {
	f.t.Helper()
	dir := f.t.TempDir()
	writeTree(f.t, dir, spec)
	f.ts++
	res, err := builder.Build(context.Background(), r, builder.Source{Dir: dir}, builder.Options{
		Ref: ref, Subject: "test " + spec.version, Version: spec.version, Timestamp: f.ts,
		Signers: []*sign.Signer{signer},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return res.Commit
}

func (f *fixture) build(spec treeSpec) commit.ID {
	return f.buildInto(f.src, testRef, spec, f.signer)
}

func (f *fixture) pull(s *deploy.Sysroot) *pull.Result {
	f.t.Helper()
	trust, err := s.TrustStore()
	if err != nil {
		f.t.Fatal(err)
	}
	res, err := pull.Pull(context.Background(), s.Repo(), f.src.Path(), testRef, pull.Options{Trust: trust})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

// buildPullSwitch builds spec, pulls it into the sysroot and switches to it.
func (f *fixture) buildPullSwitch(s *deploy.Sysroot, spec treeSpec, opts deploy.SwitchOptions) (commit.ID, *deploy.SwitchResult) {
	f.t.Helper()
	id := f.build(spec)
	f.pull(s)
	res, err := s.Switch(context.Background(), testRef, opts)
	if err != nil {
		f.t.Fatalf("switch to %s: %v", spec.version, err)
	}
	if res.Commit != id.String() {
		f.t.Fatalf("switched to %s, want %s", res.Commit, id)
	}
	return id, res
}

func (f *fixture) status(s *deploy.Sysroot) *deploy.Status {
	f.t.Helper()
	st, err := s.Status(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

func (f *fixture) deployDir(path string) string {
	return filepath.Join(f.root, filepath.FromSlash(path))
}

// bootState is what checkBootable finds.
type bootState struct {
	files       []string // cfs entry files in boot order
	deployments []string // their cfs.deployment= paths
	commits     []string // their commits
}

// checkBootable checks every entry of the sysroot: it parses and
// validates as BLS, and a cfs entry's linux and initrd files exist, its
// deployment directory is complete and its image's digest is the
// composefs= digest. It returns the cfs entries in boot order (the first
// is the default).
func checkBootable(t testing.TB, s *deploy.Sysroot, root string) bootState {
	t.Helper()
	loaded, err := bls.LoadDir(context.Background(), filepath.Join(root, "boot"))
	if err != nil {
		t.Fatalf("load entries: %v", err)
	}
	var st bootState
	for _, l := range loaded {
		if err := l.Entry.Validate(); err != nil {
			t.Errorf("entry %s does not validate: %v", l.FileName, err)
		}
		if err := bls.ValidFileName(l.FileName); err != nil {
			t.Errorf("entry file name: %v", err)
		}
		boot, err := cmdline.ParseBoot(cmdline.Split(l.Entry.Cmdline()))
		if err != nil {
			t.Errorf("entry %s: %v", l.FileName, err)
			continue
		}
		if boot.Deployment == "" {
			continue
		}
		for _, p := range append([]string{l.Entry.Linux}, l.Entry.Initrd...) {
			if st, err := os.Stat(s.BootPath(p)); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
				t.Errorf("entry %s: boot file %s: %v", l.FileName, p, err)
			}
		}
		if l.Entry.SortKey != deploy.SortKey || l.Entry.Version == "" || l.Entry.Title == "" {
			t.Errorf("entry %s: sort-key %q version %q title %q", l.FileName, l.Entry.SortKey, l.Entry.Version, l.Entry.Title)
		}
		dir := filepath.Join(root, filepath.FromSlash(boot.Deployment))
		for _, name := range []string{deploy.ImageFile, deploy.OriginFile, deploy.CommitFile, deploy.SignatureFile, deploy.EtcDir} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
				t.Errorf("entry %s: deployment incomplete: %v", l.FileName, err)
			}
		}
		d, _, err := fsverity.DigestFile(context.Background(), filepath.Join(dir, deploy.ImageFile))
		if err != nil || boot.Composefs == nil || d != boot.Composefs.SHA256 {
			t.Errorf("entry %s: image digest %s, composefs=%v (%v)", l.FileName, d, boot.Composefs, err)
		}
		dep, err := deploy.ParseDeploymentPath(boot.Deployment)
		if err != nil {
			t.Errorf("entry %s: %v", l.FileName, err)
			continue
		}
		st.files = append(st.files, l.FileName)
		st.deployments = append(st.deployments, boot.Deployment)
		st.commits = append(st.commits, dep.Commit.String())
	}
	if len(st.files) == 0 {
		t.Errorf("no cfs boot entry in %s", root)
	}
	return st
}

// snapshot records every file under root (type, mode, owner, size, a
// hash of the content or the link target), ignoring lock files, which
// operations create as a side effect of locking.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "cfs/lock" || strings.HasPrefix(rel, "cfs/repo/locks") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v", info.Mode())
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %s", len(b), hex.EncodeToString(sum[:8]))
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) string {
	var lines []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			lines = append(lines, "- "+k+" "+v)
		} else if w != v {
			lines = append(lines, "~ "+k+" "+v+" => "+w)
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, "+ "+k+" "+v)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func requireUnchanged(t testing.TB, before map[string]string, root string) {
	t.Helper()
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("sysroot changed:\n%s", d)
	}
}

// objectsOf returns the content objects of a commit in r.
func objectsOf(t testing.TB, r *repo.Repo, id commit.ID) map[fsverity.Digest]int64 {
	t.Helper()
	m, _, err := r.ReadCommit(id)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := pull.ReadTree(context.Background(), r.Objects, m.Dump)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := pull.TreeObjects(tree)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func readCommit(t testing.TB, r *repo.Repo, id commit.ID) *commit.Metadata {
	t.Helper()
	m, _, err := r.ReadCommit(id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %v is not %v", err, target)
		}
	}
}

func hasObject(r *repo.Repo, d fsverity.Digest) bool {
	_, err := os.Lstat(r.Objects.Path(d))
	return err == nil
}

func entryNames(t testing.TB, root string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(root, "boot/loader/entries"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	slices.Sort(out)
	return out
}

func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
}

func fileContent(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func setXattr(p, name, value string) error { return unix.Lsetxattr(p, name, []byte(value), 0) }

func getXattr(t testing.TB, p, name string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(buf[:n])
}

func pullRef(s *deploy.Sysroot, f *fixture, ref string, trust *sign.TrustStore) (*pull.Result, error) {
	return pull.Pull(context.Background(), s.Repo(), f.src.Path(), ref, pull.Options{Trust: trust})
}
