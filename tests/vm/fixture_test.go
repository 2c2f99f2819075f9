//go:build vm

package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// workDir holds everything the VM tests build and boot (not /tmp: EROFS
// and the disk images want a disk-backed file system, and the images are
// large). CFS_VM_DIR overrides it.
var workDir = func() string {
	if d := os.Getenv("CFS_VM_DIR"); d != "" {
		return d
	}
	return "/var/tmp/cfs-vm"
}()

// Fixed file system UUIDs of the root disks (root=UUID=… in the entries).
const (
	mainRootUUID = "c7f5a001-0000-4000-8000-00000000c0f5"
	uefiRootUUID = "c7f5a002-0000-4000-8000-00000000c0f5"
)

// The guest tree's own files (see guestinit).
const (
	canaryPath = "/usr/share/cfsvm/canary"
	tamperPath = "/usr/share/cfsvm/tamper-target"
)

// deployment is one cfs deployment on a sysroot, as `cfs-deploy status
// --json` reports it, plus the host paths of its boot files.
type deployment struct {
	Name        string   `json:"name"` // the tree variant: req, ifp, bad
	Commit      string   `json:"commit"`
	ImageDigest string   `json:"image-digest"`
	Deployment  string   `json:"deployment"`
	Options     string   `json:"options"`
	Entry       string   `json:"entry"`
	KeyIDs      []string `json:"key-ids"`
	Kernel      string   `json:"kernel"` // host path of the deployed vmlinuz
	Initrd      string   `json:"initrd"` // host path of the deployed initramfs
}

// fixture is what all VM tests share: built once per run.
type fixture struct {
	Dir        string `json:"dir"`
	Repo       string `json:"repo"` // the module root
	Kver       string `json:"kver"`
	Bin        string `json:"bin"`         // cfs-commit, cfs-deploy, cfs-initramfs, guestinit (static)
	ProvInitrd string `json:"prov-initrd"` // the harness's provisioning initramfs

	// The main sysroot: enrolled in the TPM (mode required) with two
	// deployments, "ifp" (initramfs with tpm = if-present) and "req"
	// (tpm = required, the default), both sealed to the guest's PCR 7.
	MainSysroot string                 `json:"main-sysroot"`
	MainDisk    string                 `json:"main-disk"` // ext4 (-O verity), fs-verity enabled, template
	MainTPM     string                 `json:"main-tpm"`  // swtpm state template
	Main        map[string]*deployment `json:"main"`

	// The UEFI sysroot: not enrolled; "good" (rollback) and "bad" (the
	// default, whose init powers off before boot-complete); boot files and
	// entries on the ESP.
	UEFISysroot string                 `json:"uefi-sysroot"`
	UEFIDisk    string                 `json:"uefi-disk"`
	ESP         string                 `json:"esp"`
	UEFI        map[string]*deployment `json:"uefi"`

	Timings []string `json:"timings"`
}

var (
	fixtureOnce sync.Once
	theFixture  *fixture
	fixtureErr  error
)

// getFixture builds the shared fixture on first use (with CFS_VM_REUSE=1 a
// complete earlier one under workDir is reused) and fails the test if that
// failed.
func getFixture(t *testing.T) *fixture {
	t.Helper()
	requireVMTools(t)
	fixtureOnce.Do(func() {
		start := time.Now()
		theFixture, fixtureErr = loadOrBuildFixture(t)
		if fixtureErr == nil {
			t.Logf("fixture ready in %.1fs: %s", time.Since(start).Seconds(), strings.Join(theFixture.Timings, ", "))
		}
	})
	if fixtureErr != nil {
		t.Fatalf("building the VM fixture: %v", fixtureErr)
	}
	return theFixture
}

func requireVMTools(t *testing.T) {
	t.Helper()
	// Root: mkfs -d keeps ownership, unshare, dracut. Skipped loudly,
	// failed under CI=true (testutil's strict mode).
	testutil.RequireRoot(t)
	for _, tool := range []string{"qemu-system-x86_64", "swtpm", "swtpm_ioctl", "tpm2_shutdown", "dracut",
		"mkfs.ext4", "debugfs", "mkfs.vfat", "mcopy", "mdir", "cpio", "unshare", "ldd", "pgrep", "go"} {
		testutil.RequireTool(t, tool) // scripts/vm-deps.sh installs them (make test-vm runs it)
	}
	for _, f := range []string{ovmfCode, ovmfVars, ovmfVarsMS, systemdBootEFI, "/usr/lib/systemd/systemd-bless-boot"} {
		if _, err := os.Stat(f); err != nil {
			testutil.Skip(t, err.Error()+": run scripts/vm-deps.sh (make test-vm does)")
		}
	}
}

const systemdBootEFI = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

func loadOrBuildFixture(t *testing.T) (*fixture, error) {
	dir := filepath.Join(workDir, "fixture")
	stamp := filepath.Join(dir, "fixture.json")
	if os.Getenv("CFS_VM_REUSE") == "1" {
		if b, err := os.ReadFile(stamp); err == nil {
			var f fixture
			if err := json.Unmarshal(b, &f); err == nil {
				t.Logf("reusing the fixture in %s (CFS_VM_REUSE=1)", dir)
				return &f, nil
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &builder{t: t, f: &fixture{Dir: dir, Main: map[string]*deployment{}, UEFI: map[string]*deployment{}}}
	if err := b.build(); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(b.f, "", "  ")
	if err != nil {
		return nil, err
	}
	return b.f, os.WriteFile(stamp, out, 0o644)
}

type builder struct {
	t *testing.T
	f *fixture
}

func (b *builder) step(name string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	b.f.Timings = append(b.f.Timings, fmt.Sprintf("%s %.1fs", name, d.Seconds()))
	b.t.Logf("fixture: %s: %.1fs", name, d.Seconds())
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (b *builder) path(p ...string) string { return filepath.Join(append([]string{b.f.Dir}, p...)...) }

func (b *builder) build() error {
	f := b.f
	steps := []struct {
		name string
		fn   func() error
	}{
		{"binaries", b.buildBinaries},
		{"base tree", b.baseTree},
		{"main sysroot init and TPM enroll", b.initMain},
		{"dracut initramfs (required, if-present)", b.dracut},
		{"commits", b.commits},
		{"main sysroot deploy", b.deployMain},
		{"uefi sysroot deploy", b.deployUEFI},
		{"disk images", b.disks},
		{"provisioning initramfs", b.provInitrd},
		{"provision the disks (fs-verity, TPM reseal in the guest)", func() error {
			return b.provision(f.MainTPM)
		}},
	}
	for _, s := range steps {
		if err := b.step(s.name, s.fn); err != nil {
			return err
		}
	}
	return nil
}

// run runs a command, returning its stdout; the error carries stderr.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, lastLines(stdout.String(), 40), lastLines(stderr.String(), 60))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = append([]string{"…"}, l[len(l)-n:]...)
	}
	return strings.Join(l, "\n")
}

func (b *builder) cmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return run(ctx, b.f.Dir, nil, name, args...)
}

func (b *builder) bin(name string) string { return filepath.Join(b.f.Bin, name) }

// buildBinaries builds the cfs tools and the guest init, static.
func (b *builder) buildBinaries() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := run(ctx, "", nil, "go", "env", "GOMOD")
	if err != nil {
		return err
	}
	b.f.Repo = filepath.Dir(strings.TrimSpace(root))
	b.f.Bin = b.path("bin")
	_, err = run(ctx, b.f.Repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", b.f.Bin+"/",
		"./cmd/cfs-commit", "./cmd/cfs-deploy", "./cmd/cfs-initramfs", "./tests/vm/guestinit")
	if err != nil {
		return err
	}
	kvers, _ := filepath.Glob("/lib/modules/6.12.*-cloud-amd64")
	sort.Strings(kvers)
	if len(kvers) == 0 {
		return errors.New("no 6.12 cloud kernel in /lib/modules (run scripts/vm-deps.sh)")
	}
	b.f.Kver = filepath.Base(kvers[len(kvers)-1])
	return nil
}

// baseTree builds the OS tree every commit starts from (without the
// initramfs): usr-merged, the kernel and its modules, the guest init,
// cfs-initramfs (for cfs-bless), systemd-bless-boot with its libraries and
// the files the checks read.
func (b *builder) baseTree() error {
	root := b.path("tree-base")
	k := b.f.Kver
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib/cfsvm", "usr/lib64", "usr/share/cfsvm", "usr/etc",
		"etc", "var", "proc", "sys", "dev", "run", "tmp", "efi", "mnt", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for l, target := range map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"} {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/modules"), 0o755); err != nil {
		return err
	}
	if err := copyDir("/lib/modules/"+k, filepath.Join(root, "usr/lib/modules", k)); err != nil {
		return err
	}
	if err := copyFile("/boot/vmlinuz-"+k, filepath.Join(root, "usr/lib/modules", k, "vmlinuz")); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		b.bin("guestinit"):     "usr/sbin/init",
		b.bin("cfs-initramfs"): "usr/bin/cfs-initramfs",
	} {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return err
		}
	}
	if err := installELF(root, "/usr/lib/systemd/systemd-bless-boot"); err != nil {
		return err
	}
	files := map[string]string{
		"usr/lib/os-release":     "NAME=\"cfs VM test\"\nID=cfsvm\nVERSION_ID=1\nPRETTY_NAME=\"cfs VM test OS\"\n",
		"usr/etc/hostname":       "cfsvm\n",
		"usr/etc/os-release":     "NAME=\"cfs VM test\"\nID=cfsvm\nVERSION_ID=1\n",
		"usr/lib/cfsvm/mode":     "good\n",
		"usr/lib/cfsvm/read":     canaryPath + "\n" + tamperPath + "\n",
		canaryPath[1:]:           string(pseudoRandom(1, 64<<10)),
		tamperPath[1:]:           string(pseudoRandom(2, 64<<10)),
		"usr/share/cfsvm/README": "Files the cfs VM tests read in the guest (tests/vm).\n",
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pseudoRandom returns n deterministic bytes.
func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0xcf5))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var lddRE = regexp.MustCompile(`(/\S+)\s+\(0x`)

// installELF copies a dynamically linked program and the libraries ldd
// names into root, at the same paths (root is usr-merged: /lib64 → usr/lib64).
func installELF(root, prog string) error {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", prog, err)
	}
	paths := []string{prog}
	for _, m := range lddRE.FindAllStringSubmatch(string(out), -1) {
		paths = append(paths, m[1])
	}
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return err
		}
		dst := p
		if !strings.HasPrefix(dst, "/usr/") {
			dst = "/usr" + dst // /lib/x86_64-linux-gnu → /usr/lib/…, /lib64 → /usr/lib64
		}
		dst = filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyFile(real, dst); err != nil {
			return err
		}
	}
	return nil
}

// initMain creates the main sysroot and enrolls it in a fresh swtpm whose
// state directory is the template of every test's vTPM. Enrolling comes
// first because the initramfs carries the enrollment.
func (b *builder) initMain() error {
	f := b.f
	if _, err := b.cmd(b.bin("cfs-commit"), "keygen", b.path("vm")); err != nil {
		return err
	}
	if err := os.MkdirAll(b.path("trusted"), 0o755); err != nil {
		return err
	}
	if err := copyFile(b.path("vm.pub"), b.path("trusted", "vm.pub")); err != nil {
		return err
	}
	f.MainSysroot = b.path("sysroot-main")
	if _, err := b.cmd(b.bin("cfs-deploy"), "--sysroot", f.MainSysroot, "init", "--stateroot", "os", "--trusted-keys", b.path("trusted")); err != nil {
		return err
	}
	f.MainTPM = b.path("tpm-main")
	if err := os.MkdirAll(f.MainTPM, 0o755); err != nil {
		return err
	}
	tpm, err := startTCPTPM(f.MainTPM)
	if err != nil {
		return err
	}
	_, err = b.cmd(b.bin("cfs-deploy"), "--sysroot", f.MainSysroot, "--tpm", tpm.uri(), "tpm", "enroll", "--mode", "required")
	if serr := tpm.stop(); err == nil {
		err = serr
	}
	return err
}

// dracut builds the two initramfs variants with the cfs dracut module of
// the repository (through a private dracut base directory, so the host's
// /usr/lib/dracut is left alone), in parallel.
func (b *builder) dracut() error {
	base := b.path("dracut-base")
	if err := os.MkdirAll(filepath.Join(base, "modules.d"), 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir("/usr/lib/dracut")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == "modules.d" {
			continue
		}
		if err := os.Symlink(filepath.Join("/usr/lib/dracut", e.Name()), filepath.Join(base, e.Name())); err != nil {
			return err
		}
	}
	mods, err := os.ReadDir("/usr/lib/dracut/modules.d")
	if err != nil {
		return err
	}
	for _, e := range mods {
		if e.Name() == "50cfs" {
			continue
		}
		if err := os.Symlink(filepath.Join("/usr/lib/dracut/modules.d", e.Name()), filepath.Join(base, "modules.d", e.Name())); err != nil {
			return err
		}
	}
	if err := os.Symlink(filepath.Join(b.f.Repo, "dracut/modules.d/50cfs"), filepath.Join(base, "modules.d/50cfs")); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, mode := range []string{"required", "if-present"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.dracutOne(base, mode)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (b *builder) dracutOne(base, mode string) error {
	name := map[string]string{"required": "req", "if-present": "ifp"}[mode]
	confDir := b.path("dracut-conf-" + name)
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	initramfsConf := b.path("initramfs-" + name + ".conf")
	if err := os.WriteFile(initramfsConf, []byte("# cfs VM tests\nverity = require\ntpm = "+mode+"\nthreshold = 1\n"), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf("cfs_bindir=%q\ncfs_unitdir=%q\ncfs_sysroot=%q\ncfs_initramfs_conf=%q\ncompress=\"zstd\"\n",
		b.f.Bin, filepath.Join(b.f.Repo, "systemd"), b.f.MainSysroot, initramfsConf)
	if err := os.WriteFile(filepath.Join(confDir, "cfs.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := b.path("initramfs-" + name + ".img")
	tmp := b.path("dracut-tmp-" + name)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	_, err := run(ctx, b.f.Dir, []string{"dracutbasedir=" + base}, "dracut",
		"--force", "--no-hostonly", "--no-hostonly-cmdline", "--kver", b.f.Kver,
		"--conf", "/dev/null", "--confdir", confDir, "--tmpdir", tmp,
		"--add", "cfs", "--omit", "plymouth crypt dm nvdimm overlay-root lunmask resume virtiofs kernel-modules-extra", out)
	return err
}

// commits builds the signed commits: req and ifp (the same tree but for
// the initramfs) and bad (ifp whose init powers off before boot-complete).
func (b *builder) commits() error {
	repo := b.path("repo")
	if _, err := b.cmd(b.bin("cfs-commit"), "init", "--repo", repo); err != nil {
		return err
	}
	for i, v := range []struct{ name, initrd, mode, rollbackIndex string }{
		{"req", "initramfs-req.img", "good", "1"}, // blessing raises the TPM counter 0 -> 1
		{"ifp", "initramfs-ifp.img", "good", "0"},
		{"bad", "initramfs-ifp.img", "fail", "0"},
	} {
		tree := b.path("tree-" + v.name)
		if err := copyDir(b.path("tree-base"), tree); err != nil {
			return err
		}
		if err := copyFile(b.path(v.initrd), filepath.Join(tree, "usr/lib/modules", b.f.Kver, "initramfs.img")); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tree, "usr/lib/cfsvm/mode"), []byte(v.mode+"\n"), 0o644); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		_, err := run(ctx, b.f.Dir, []string{fmt.Sprintf("SOURCE_DATE_EPOCH=%d", 1700000000+i)},
			b.bin("cfs-commit"), "build", "--repo", repo, "--ref", "vm/"+v.name, "--key", b.path("vm.key"),
			"--version", "1."+fmt.Sprint(i), "--subject", "cfs VM test "+v.name, "--rollback-index", v.rollbackIndex, tree)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// kargs are the kernel arguments of the first deployment of a sysroot.
func kargs(uuid string) []string {
	return []string{"--karg", "root=UUID=" + uuid, "--karg", "rw", "--karg", "console=ttyS0"}
}

// deployMain pulls and deploys ifp then req on the main sysroot, sealing
// each (mode required) with a swtpm on the TPM template's state; the
// guest re-seals them to its own PCR 7 when provisioning.
func (b *builder) deployMain() error {
	f := b.f
	tpm, err := startTCPTPM(f.MainTPM)
	if err != nil {
		return err
	}
	defer tpm.stop()
	for _, name := range []string{"ifp", "req"} {
		if _, err := b.cmd(b.bin("cfs-deploy"), "--sysroot", f.MainSysroot, "pull", b.path("repo"), "vm/"+name); err != nil {
			return err
		}
		args := append([]string{"--sysroot", f.MainSysroot, "--tpm", tpm.uri(), "switch"}, kargs(mainRootUUID)...)
		if _, err := b.cmd(b.bin("cfs-deploy"), append(args, "vm/"+name)...); err != nil {
			return err
		}
	}
	out, err := b.cmd(b.bin("cfs-deploy"), "--sysroot", f.MainSysroot, "--tpm", tpm.uri(), "status", "--json")
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.path("status-main.json"), []byte(out), 0o644); err != nil {
		return err
	}
	f.Main, err = parseStatus(out, f.MainSysroot)
	if err != nil {
		return err
	}
	return tpm.stop()
}

// deployUEFI deploys good then bad on the UEFI sysroot with its boot/ on
// a file system of its own (a tmpfs in a private mount namespace, standing
// in for the ESP: the entries then name /cfs/… paths, as on an ESP), and
// keeps a copy of boot/ for the ESP image.
func (b *builder) deployUEFI() error {
	f := b.f
	f.UEFISysroot = b.path("sysroot-uefi")
	if _, err := b.cmd(b.bin("cfs-deploy"), "--sysroot", f.UEFISysroot, "init", "--stateroot", "os", "--trusted-keys", b.path("trusted")); err != nil {
		return err
	}
	espDir := b.path("esp-tree")
	script := `set -euo pipefail
S=$1; D=$2; REPO=$3; OUT=$4; UUID=$5; shift 5
cp -a "$S/boot" "$OUT.boot-orig"
mount -t tmpfs cfsvm-esp "$S/boot"
cp -a "$OUT.boot-orig/." "$S/boot/"
rm -rf "$OUT.boot-orig"
for ref in vm/ifp vm/bad; do
  "$D" --sysroot "$S" pull "$REPO" "$ref"
  "$D" --sysroot "$S" switch --karg root=UUID=$UUID --karg rw --karg console=ttyS0 "$ref"
done
"$D" --sysroot "$S" status --json > "$OUT.status.json"
mkdir -p "$OUT"
cp -a "$S/boot/." "$OUT/"
umount "$S/boot"
`
	if _, err := b.cmd("unshare", "-m", "--propagation", "private", "bash", "-c", script, "deploy-uefi",
		f.UEFISysroot, b.bin("cfs-deploy"), b.path("repo"), espDir, uefiRootUUID); err != nil {
		return err
	}
	status, err := os.ReadFile(espDir + ".status.json")
	if err != nil {
		return err
	}
	deps, err := parseStatus(string(status), espDir)
	if err != nil {
		return err
	}
	// Deployed in this order: ifp is "good", bad is "bad".
	f.UEFI = map[string]*deployment{"good": deps["ifp"], "bad": deps["bad"]}
	if f.UEFI["good"] == nil || f.UEFI["bad"] == nil {
		return fmt.Errorf("uefi sysroot status lacks a deployment:\n%s", status)
	}
	return nil
}

// statusJSON is the part of cfs-deploy status --json the tests read.
type statusJSON struct {
	Deployments []struct {
		Deployment  string `json:"deployment"`
		Commit      string `json:"commit"`
		ImageDigest string `json:"image-digest"`
		Origin      string `json:"origin"`
		Default     bool   `json:"default"`
		Rollback    bool   `json:"rollback"`
		Entry       string `json:"entry"`
		Options     string `json:"options"`
		Signature   struct {
			Valid  bool     `json:"valid"`
			KeyIDs []string `json:"key-ids"`
		} `json:"signature"`
		BootCounter *struct {
			State     string `json:"state"`
			TriesLeft int    `json:"tries-left"`
			TriesDone int    `json:"tries-done"`
		} `json:"boot-counter"`
	} `json:"deployments"`
}

var bootLineRE = regexp.MustCompile(`(?m)^(linux|initrd)\s+(\S+)`)

// parseStatus maps the deployments of a status --json document by their
// ref's last element (vm/req → req) and finds their boot files under
// bootRoot (the sysroot, whose entries name /boot/cfs/…, or the ESP tree,
// /cfs/…).
func parseStatus(doc, bootRoot string) (map[string]*deployment, error) {
	var st statusJSON
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		return nil, fmt.Errorf("status --json: %w\n%s", err, doc)
	}
	out := map[string]*deployment{}
	for _, d := range st.Deployments {
		name := filepath.Base(d.Origin)
		dep := &deployment{Name: name, Commit: d.Commit, ImageDigest: d.ImageDigest, Deployment: d.Deployment,
			Options: d.Options, Entry: d.Entry, KeyIDs: d.Signature.KeyIDs}
		entryDir := filepath.Join(bootRoot, "boot/loader/entries")
		if _, err := os.Stat(entryDir); err != nil {
			entryDir = filepath.Join(bootRoot, "loader/entries")
		}
		entry, err := os.ReadFile(filepath.Join(entryDir, d.Entry))
		if err != nil {
			return nil, err
		}
		for _, m := range bootLineRE.FindAllStringSubmatch(string(entry), -1) {
			p := filepath.Join(bootRoot, m[2])
			if _, err := os.Stat(p); err != nil {
				// /boot/cfs/… on the sysroot; /cfs/… on the ESP tree.
				p = filepath.Join(bootRoot, strings.TrimPrefix(m[2], "/boot"))
			}
			if m[1] == "linux" {
				dep.Kernel = p
			} else {
				dep.Initrd = p
			}
		}
		if dep.Kernel == "" || dep.Initrd == "" {
			return nil, fmt.Errorf("entry %s names no linux/initrd:\n%s", d.Entry, entry)
		}
		out[name] = dep
	}
	return out, nil
}

// disks makes the ext4 root images (-O verity, 4 KiB blocks, fixed
// UUIDs) from the sysroot directories and the ESP.
func (b *builder) disks() error {
	f := b.f
	f.MainDisk = b.path("main.img")
	f.UEFIDisk = b.path("uefi.img")
	for _, d := range []struct{ img, dir, uuid string }{
		{f.MainDisk, f.MainSysroot, mainRootUUID},
		{f.UEFIDisk, f.UEFISysroot, uefiRootUUID},
	} {
		if _, err := b.cmd("mkfs.ext4", "-q", "-b", "4096", "-O", "verity", "-U", d.uuid, "-L", "cfsroot",
			"-d", d.dir, d.img, "1G"); err != nil {
			return err
		}
	}
	f.ESP = b.path("esp.img")
	if _, err := b.cmd("mkfs.vfat", "-F", "32", "-n", "ESP", "-C", f.ESP, "131072"); err != nil {
		return err
	}
	esp := b.path("esp-tree")
	if err := os.MkdirAll(filepath.Join(esp, "EFI/BOOT"), 0o755); err != nil {
		return err
	}
	if err := copyFile(systemdBootEFI, filepath.Join(esp, "EFI/BOOT/BOOTX64.EFI")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(esp, "loader/loader.conf"), []byte("timeout 0\nconsole-mode keep\n"), 0o644); err != nil {
		return err
	}
	ents, err := os.ReadDir(esp)
	if err != nil {
		return err
	}
	args := []string{"-i", f.ESP, "-s", "-p", "-Q"}
	for _, e := range ents {
		args = append(args, filepath.Join(esp, e.Name()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err = run(ctx, b.f.Dir, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", append(args, "::/")...)
	return err
}

// provInitrd packs the provisioning initramfs: the guest init as /init,
// cfs-deploy (for the TPM reseal) and virtio_blk.
func (b *builder) provInitrd() error {
	root := b.path("prov-root")
	k := b.f.Kver
	blk := "kernel/drivers/block/virtio_blk.ko.xz"
	for _, d := range []string{"bin", "dev", "proc", "sys", "run", "mnt", "lib/modules/" + k + "/kernel/drivers/block"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for src, dst := range map[string]string{
		b.bin("guestinit"):                   "init",
		b.bin("cfs-deploy"):                  "bin/cfs-deploy",
		"/lib/modules/" + k + "/modules.dep": "lib/modules/" + k + "/modules.dep",
		"/lib/modules/" + k + "/" + blk:      "lib/modules/" + k + "/" + blk,
	} {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return err
		}
	}
	b.f.ProvInitrd = b.path("prov-initrd.cpio")
	_, err := b.cmd("bash", "-c", `set -euo pipefail; cd "$1"; find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > "$2"`, "cpio", root, b.f.ProvInitrd)
	return err
}

// provision boots the harness's provisioning initramfs once with both
// root disks: fs-verity on every object and image, and the main sysroot's
// TPM blobs sealed again to the PCR 7 this guest firmware gives.
func (b *builder) provision(tpmState string) error {
	res := boot(b.t, machine{name: "provision", kernel: "/boot/vmlinuz-" + b.f.Kver, initrd: b.f.ProvInitrd,
		append: "console=ttyS0 cfsvm.provision=1 cfsvm.disks=/dev/vda,/dev/vdb cfsvm.reseal=/dev/vda",
		disks:  []string{b.f.MainDisk, b.f.UEFIDisk}, tpmState: tpmState, timeout: 5 * time.Minute})
	return provisionResult(b.t, res)
}

// provisionResult checks a provisioning boot's report.
func provisionResult(t *testing.T, res *bootResult) error {
	if !res.exited {
		return fmt.Errorf("provisioning boot did not power off (log %s)", res.logPath)
	}
	var errs []string
	for _, l := range res.guestLines() {
		if strings.HasPrefix(l, "error") || (strings.HasPrefix(l, "cfs-deploy ") && strings.Contains(l, " exit=") && !strings.HasSuffix(l, " exit=0")) {
			errs = append(errs, l)
		}
		if strings.HasPrefix(l, "verity-enabled ") {
			t.Logf("provisioning: %s", l)
		}
	}
	if _, ok := res.guestLine("provisioned"); !ok || len(errs) > 0 {
		return fmt.Errorf("provisioning failed (log %s):\n%s", res.logPath, strings.Join(errs, "\n"))
	}
	return nil
}
