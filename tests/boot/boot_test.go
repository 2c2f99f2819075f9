// Package boot is the end-to-end test of the boot chain on the host: a
// commit built with cfs-commit, deployed with cfs-deploy onto a sysroot that
// is a loop-mounted ext4 file, enrolled with a real TPM (swtpm), and booted
// by cfs-initramfs mount-root with the options of the written boot entry —
// then every refusal the initramfs owes, each with its own message and
// nothing left mounted. It runs as root in a private mount namespace.
package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fstest"
	"github.com/cfs-dev/cfs/initramfs"
	"github.com/cfs-dev/cfs/internal/testutil"
	"github.com/cfs-dev/cfs/tpm"
)

// Binaries TestMain builds.
var bin string

const (
	exitVerify = 4
	ref        = "os/x86_64/stable"
	stateroot  = "os"
	epoch      = "1700000000"
)

type mainRunner struct{ m *testing.M }

func (r mainRunner) Run() int {
	dir, err := os.MkdirTemp("", "cfs-boot-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", dir+"/", "./cmd/cfs-commit", "./cmd/cfs-deploy", "./cmd/cfs-initramfs")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the cfs tools: %v\n%s", err, out)
		return 1
	}
	bin = dir
	return r.m.Run()
}

func TestMain(m *testing.M) { os.Exit(testutil.RunInMountNS(mainRunner{m})) }

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func run(t testing.TB, tool string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, tool), args...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+epoch)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %s %v: %v", tool, args, err)
	}
	return r
}

func must(t testing.TB, tool string, args ...string) string {
	t.Helper()
	r := run(t, tool, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %s", tool, strings.Join(args, " "), r)
	}
	return r.stdout
}

func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// machine is a built, deployed and TPM-enrolled sysroot plus everything a
// boot needs: the keys and configuration of the initramfs, a sysroot
// directory and a run directory.
type machine struct {
	dir      string
	repo     string
	key      string
	rootfs   string
	physical string // the loop-mounted ext4 sysroot
	keys     string // the initramfs' /etc/cfs
	config   string // the initramfs' initramfs.conf
	sysroot  string // where mount-root mounts the root
	run      string // the initramfs' /run
	tpm      *testutil.SWTPM
}

// writeRootfs writes a small root file system: files, a symlink, a
// hardlink, xattrs, a kernel and initramfs, /etc and an empty /var. All
// times are before SOURCE_DATE_EPOCH, so the committed tree equals it.
func writeRootfs(t testing.TB, r, version string) {
	t.Helper()
	files := map[string]string{
		"usr/lib/os-release":                   "NAME=cfs test\nID=cfs-test\nVERSION_ID=" + version + "\n",
		"usr/bin/hello":                        "#!/bin/sh\necho hello\n",
		"usr/share/doc/readme":                 strings.Repeat("a verified root\n", 300),
		"usr/lib/modules/6.12.0/vmlinuz":       strings.Repeat("kernel", 5000),
		"usr/lib/modules/6.12.0/initramfs.img": strings.Repeat("initrd", 3000),
		"etc/hostname":                         "cfs-test\n",
		"etc/fstab":                            "# empty\n",
		"usr/etc/hostname":                     "cfs-test\n",
		"usr/etc/fstab":                        "# empty\n",
		"usr/share/version":                    version + "\n",
	}
	for p, c := range files {
		full := filepath.Join(r, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"var", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(r, "usr/bin/hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The default /etc ships as /usr/etc (cfs-deploy merges it into the
	// deployment's /etc); the image's own /etc has the same files, so the
	// booted tree equals this one.
	for _, etc := range []string{"etc", "usr/etc"} {
		if err := os.Symlink("../usr/lib/os-release", filepath.Join(r, etc, "os-release")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(r, "usr/share/doc/readme"), filepath.Join(r, "usr/share/doc/readme.link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(r, "usr/bin/hello"), "user.cfs.test", []byte("xattr value"), 0); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1600000000, 0)
	err := filepath.Walk(r, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newMachine builds commit 1.0, makes a 256 MiB ext4 sysroot (fs-verity
// feature on, 4 KiB blocks, as on a real machine), loop-mounts it, inits
// it, enrolls the swtpm and switches to the commit.
func newMachine(t *testing.T) *machine {
	t.Helper()
	testutil.RequireMountNS(t)
	testutil.RequireTool(t, "mkfs.ext4")
	testutil.RequireTool(t, "tpm2_pcrread")
	testutil.RequireTool(t, "swtpm_ioctl")
	dir, err := os.MkdirTemp("/var/tmp", "cfs-boot-") // disk-backed: EROFS cannot mount files on tmpfs
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{
		dir:      dir,
		repo:     filepath.Join(dir, "repo"),
		key:      filepath.Join(dir, "signing"),
		rootfs:   filepath.Join(dir, "rootfs"),
		physical: filepath.Join(dir, "physical"),
		keys:     filepath.Join(dir, "initramfs-etc-cfs"),
		config:   filepath.Join(dir, "initramfs.conf"),
		sysroot:  filepath.Join(dir, "sysroot"),
		run:      filepath.Join(dir, "run"),
	}
	for _, d := range []string{m.physical, m.sysroot, m.run, filepath.Join(m.keys, "trusted.d"), filepath.Join(m.keys, "tpm")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "disk.img")
	sh(t, "truncate", "-s", "256M", disk)
	sh(t, "mkfs.ext4", "-q", "-b", "4096", "-O", "verity", "-L", "cfs-sysroot", disk)
	sh(t, "mount", "-o", "loop", disk, m.physical)
	t.Cleanup(func() {
		_ = exec.Command("umount", "-R", m.sysroot).Run()
		_ = exec.Command("umount", m.physical).Run()
		if !t.Failed() || os.Getenv("CFS_TEST_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s", dir)
		}
	})
	writeRootfs(t, m.rootfs, "1.0")
	must(t, "cfs-commit", "init", "--repo", m.repo)
	must(t, "cfs-commit", "keygen", m.key)
	must(t, "cfs-commit", "build", "--repo", m.repo, "--ref", ref, "--key", m.key+".key", "--version", "1.0", "--rollback-index", "1", m.rootfs)
	trusted := filepath.Join(dir, "trusted")
	if err := os.MkdirAll(trusted, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, m.key+".pub", filepath.Join(trusted, "signing.pub"))
	copyFile(t, m.key+".pub", filepath.Join(m.keys, "trusted.d", "signing.pub"))

	m.tpm = testutil.StartSWTPM(t, "", true)
	must(t, "cfs-deploy", "--sysroot", m.physical, "init", "--stateroot", stateroot, "--trusted-keys", trusted)
	must(t, "cfs-deploy", "--sysroot", m.physical, "--tpm", m.tpm.URI(), "tpm", "enroll")
	copyFile(t, filepath.Join(m.physical, "cfs/tpm/enrollment.json"), filepath.Join(m.keys, "tpm/enrollment.json"))
	must(t, "cfs-deploy", "--sysroot", m.physical, "pull", m.repo, ref)
	must(t, "cfs-deploy", "--sysroot", m.physical, "--tpm", m.tpm.URI(), "switch", "--karg", "root=LABEL=cfs-sysroot", "--karg", "rw", ref)
	m.writeConfig(t, "verity = objects\ntpm = required\n")
	return m
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (m *machine) writeConfig(t testing.TB, text string) {
	t.Helper()
	if err := os.WriteFile(m.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// deployment is one entry of `cfs-deploy status --json`.
type deployment struct {
	Deployment  string `json:"deployment"`
	Commit      string `json:"commit"`
	ImageDigest string `json:"image-digest"`
	Options     string `json:"options"`
	Default     bool   `json:"default"`
}

func (m *machine) status(t testing.TB) []deployment {
	t.Helper()
	var st struct {
		Deployments []deployment `json:"deployments"`
	}
	if err := json.Unmarshal([]byte(must(t, "cfs-deploy", "--sysroot", m.physical, "--tpm", m.tpm.URI(), "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st.Deployments
}

// boot runs mount-root with the given kernel command line and extra flags.
func (m *machine) boot(t testing.TB, cmdline string, extra ...string) result {
	t.Helper()
	args := append([]string{"mount-root", "--cmdline", cmdline, "--physical-root", m.physical, "--sysroot", m.sysroot,
		"--run-dir", m.run, "--keys", m.keys, "--config", m.config, "--tpm", m.tpm.URI(), "--json"}, extra...)
	return run(t, "cfs-initramfs", args...)
}

// shutdown unmounts what a boot mounted and clears the run directory.
func (m *machine) shutdown(t testing.TB) {
	t.Helper()
	sh(t, "umount", "-R", m.sysroot)
	if err := os.RemoveAll(m.run); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(m.run, 0o755); err != nil {
		t.Fatal(err)
	}
}

// reboot power-cycles the TPM: PCRs return to their reset values.
func (m *machine) reboot(t testing.TB) {
	t.Helper()
	m.tpm.Tool(t, "tpm2_shutdown", "-c")
	sh(t, "swtpm_ioctl", "--tcp", fmt.Sprintf("127.0.0.1:%d", m.tpm.Port+1), "-i")
	m.tpm.Tool(t, "tpm2_startup", "-c")
}

func (m *machine) pcr(t testing.TB, n int) string {
	t.Helper()
	out := m.tpm.Tool(t, "tpm2_pcrread", fmt.Sprintf("sha256:%d", n))
	i := strings.Index(out, "0x")
	if i < 0 {
		t.Fatalf("tpm2_pcrread: %s", out)
	}
	return strings.ToLower(strings.TrimSpace(out[i+2:]))
}

func extend(old string, event string) string {
	prev, _ := hex.DecodeString(old)
	e := sha256.Sum256([]byte(event))
	h := sha256.Sum256(append(prev, e[:]...))
	return hex.EncodeToString(h[:])
}

// mountsUnder lists the mount points at or below dirs.
func mountsUnder(t testing.TB, dirs ...string) []string {
	t.Helper()
	var out []string
	for _, mp := range testutil.MountPoints(t) {
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				out = append(out, mp)
			}
		}
	}
	return out
}

func TestBootChain(t *testing.T) {
	m := newMachine(t)
	deps := m.status(t)
	if len(deps) != 1 || !deps[0].Default {
		t.Fatalf("status: %+v", deps)
	}
	a := deps[0]
	for _, want := range []string{"composefs=" + a.ImageDigest, "cfs.deployment=" + a.Deployment, "root=LABEL=cfs-sysroot"} {
		if !strings.Contains(a.Options, want) {
			t.Fatalf("entry options %q lack %q", a.Options, want)
		}
	}
	if got := m.pcr(t, 15); got != strings.Repeat("0", 64) {
		t.Fatalf("PCR 15 before boot: %s", got)
	}

	// The good boot.
	r := m.boot(t, a.Options)
	if r.code != 0 {
		t.Fatalf("mount-root: %s", r)
	}
	var rec initramfs.Record
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
		t.Fatalf("mount-root --json: %v\n%s", err, r.stdout)
	}
	if rec.Deployment != a.Deployment || rec.Commit != a.Commit || rec.ImageDigest != a.ImageDigest || rec.Verity != "objects" ||
		!rec.TPM.Present || !rec.TPM.Unsealed || !rec.TPM.Measured || rec.TPM.MeasurePCR != 15 || rec.RollbackIndex != 1 {
		t.Fatalf("record: %+v", rec)
	}
	onDisk, err := initramfs.ReadRecord(m.run)
	if err != nil {
		t.Fatal(err)
	}
	if !reflectEqual(onDisk, &rec) {
		t.Fatalf("booted.json %+v differs from the printed record %+v", onDisk, rec)
	}
	var pointer struct {
		Deployment string `json:"deployment"`
	}
	b, _ := os.ReadFile(filepath.Join(m.run, "cfs/booted.json"))
	if err := json.Unmarshal(b, &pointer); err != nil || pointer.Deployment != a.Deployment {
		t.Fatalf("booted.json does not name the deployment for cfs-deploy: %s", b)
	}
	if _, err := os.Stat(filepath.Join(m.run, "cfs/enrollment.json")); err != nil {
		t.Fatalf("enrollment not left for bless: %v", err)
	}

	// cfs-deploy on the booted system reads the record: A is booted.
	var st struct {
		Deployments []struct {
			Deployment string `json:"deployment"`
			Booted     bool   `json:"booted"`
		} `json:"deployments"`
	}
	if err := json.Unmarshal([]byte(must(t, "cfs-deploy", "--sysroot", m.physical, "--run-dir", m.run, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Deployments) != 1 || !st.Deployments[0].Booted || st.Deployments[0].Deployment != a.Deployment {
		t.Fatalf("cfs-deploy status after boot: %+v", st)
	}

	// The tree at the sysroot is the committed tree.
	fstest.AssertSameTree(t, m.rootfs, m.sysroot, fstest.Options{SkipDirTimes: true})

	// PCR 15 holds exactly the measured event, and the log records it.
	if !strings.HasPrefix(rec.TPM.Event, "cfs-root:sha256:"+a.ImageDigest+":"+a.Commit+":") {
		t.Fatalf("event %q", rec.TPM.Event)
	}
	if got, want := m.pcr(t, 15), extend(strings.Repeat("0", 64), rec.TPM.Event); got != want {
		t.Fatalf("PCR 15 = %s, want %s (zero extended with the event)", got, want)
	}
	logData, err := os.ReadFile(filepath.Join(m.run, "log/systemd/tpm2-measure.log"))
	if err != nil || !bytes.Contains(logData, []byte(rec.TPM.Event)) {
		t.Fatalf("measure log: %v %q", err, logData)
	}
	if _, err := tpm.ParseEventLog(logData); err != nil {
		t.Fatalf("measure log does not parse: %v", err)
	}

	// /etc and /var are writable, and land in the deployment and stateroot.
	for _, p := range []string{"etc/written-at-boot", "var/lib/state"} {
		full := filepath.Join(m.sysroot, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("persisted "+p+"\n"), 0o644); err != nil {
			t.Fatalf("%s is not writable: %v", p, err)
		}
	}
	if err := os.WriteFile(filepath.Join(m.sysroot, "usr/new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing /usr: %v, want EROFS", err)
	}
	for rel, p := range map[string]string{
		filepath.Join(a.Deployment, "etc/written-at-boot"): "etc/written-at-boot",
		"cfs/deploy/os/var/lib/state":                      "var/lib/state",
	} {
		got, err := os.ReadFile(filepath.Join(m.physical, rel))
		if err != nil || string(got) != "persisted "+p+"\n" {
			t.Fatalf("%s on the physical root: %q %v", rel, got, err)
		}
	}

	// status: the record, as a human reads it.
	out := must(t, "cfs-initramfs", "status", "--run-dir", m.run)
	for _, want := range []string{a.Deployment, a.Commit, "digest unsealed", "measured into PCR 15"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	// measure again: nothing (the record says measured); PCR 15 unchanged.
	pcr15 := m.pcr(t, 15)
	must(t, "cfs-initramfs", "measure", "--run-dir", m.run, "--tpm", m.tpm.URI())
	if got := m.pcr(t, 15); got != pcr15 {
		t.Fatalf("measure after mount-root extended PCR 15 again")
	}

	// Persistence: shut down, reboot, boot again; the writes are there.
	m.shutdown(t)
	if left := mountsUnder(t, m.sysroot); len(left) > 0 {
		t.Fatalf("still mounted after shutdown: %v", left)
	}
	// The latch: without a reboot the sealed digest no longer unseals.
	r = m.boot(t, a.Options)
	m.refused(t, r, "tpm check failed", "PCR 15", a.Deployment)
	m.reboot(t)
	r = m.boot(t, a.Options)
	if r.code != 0 {
		t.Fatalf("second boot: %s", r)
	}
	for _, p := range []string{"etc/written-at-boot", "var/lib/state"} {
		if _, err := os.Stat(filepath.Join(m.sysroot, p)); err != nil {
			t.Fatalf("%s did not persist: %v", p, err)
		}
	}

	// Bless: the counter goes to the booted rollback index.
	out = must(t, "cfs-initramfs", "bless", "--run-dir", m.run, "--tpm", m.tpm.URI())
	if !strings.Contains(out, "rollback index 1") {
		t.Fatalf("bless: %s", out)
	}
	m.shutdown(t)
	m.reboot(t)

	m.refusals(t, a)
}

func reflectEqual(a, b *initramfs.Record) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// refused checks a refused boot: exit code 4, the message names every one
// of wants, and nothing is mounted or recorded.
func (m *machine) refused(t testing.TB, r result, wants ...string) {
	t.Helper()
	if r.code != exitVerify {
		t.Fatalf("want exit %d, got %s", exitVerify, r)
	}
	t.Logf("refused: %s", r.stderr[strings.LastIndex(strings.TrimSpace(r.stderr), "\n")+1:])
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("the message does not name %q:\n%s", w, r.stderr)
		}
	}
	if left := mountsUnder(t, m.sysroot, m.run); len(left) > 0 {
		t.Fatalf("refused boot left mounts: %v", left)
	}
	if _, err := os.Stat(filepath.Join(m.run, "cfs/booted.json")); err == nil {
		t.Fatal("refused boot left a boot record")
	}
	if r.stdout != "" {
		t.Errorf("refused boot printed a record: %s", r.stdout)
	}
}

// refusals runs every boot the initramfs must refuse, each restored
// afterwards, then checks the good boot still works.
func (m *machine) refusals(t *testing.T, a deployment) {
	depDir := filepath.Join(m.physical, a.Deployment)
	image := filepath.Join(depDir, "image.cfs")

	t.Run("tampered image byte", func(t *testing.T) {
		orig := readFile(t, image)
		bad := slices.Clone(orig)
		bad[len(bad)/2] ^= 0x01
		writeFile(t, image, bad)
		defer writeFile(t, image, orig)
		r := m.boot(t, a.Options)
		m.refused(t, r, "image digest check failed", "expected image digest "+a.ImageDigest+" (signed)", a.Deployment)
	})

	t.Run("swapped object", func(t *testing.T) {
		var objs []string
		for _, o := range strings.Fields(must(t, "cfs-commit", "objects", image)) {
			objs = append(objs, filepath.Join(m.physical, "cfs/repo/objects", o))
		}
		if len(objs) < 2 {
			t.Fatalf("want 2 objects, have %d", len(objs))
		}
		x, y := readFile(t, objs[0]), readFile(t, objs[1])
		writeFile(t, objs[0], y)
		writeFile(t, objs[1], x)
		defer func() { writeFile(t, objs[0], x); writeFile(t, objs[1], y) }()
		r := m.boot(t, a.Options)
		m.refused(t, r, "objects check failed", "expected object ", a.Deployment)
	})

	t.Run("changed signature", func(t *testing.T) {
		sigPath := filepath.Join(depDir, "commit.sig")
		orig := readFile(t, sigPath)
		var env map[string]any
		if err := json.Unmarshal(orig, &env); err != nil {
			t.Fatal(err)
		}
		sigs := env["signatures"].([]any)
		sig := sigs[0].(map[string]any)
		s := []byte(sig["sig"].(string))
		s[5] = map[bool]byte{true: 'B', false: 'A'}[s[5] == 'A']
		sig["sig"] = string(s)
		bad, _ := json.Marshal(env)
		writeFile(t, sigPath, bad)
		defer writeFile(t, sigPath, orig)
		r := m.boot(t, a.Options)
		m.refused(t, r, "signature check failed", a.Deployment)
	})

	t.Run("untrusted key", func(t *testing.T) {
		other := filepath.Join(m.dir, "other")
		must(t, "cfs-commit", "keygen", other)
		trusted := filepath.Join(m.keys, "trusted.d")
		orig := readFile(t, filepath.Join(trusted, "signing.pub"))
		if err := os.Remove(filepath.Join(trusted, "signing.pub")); err != nil {
			t.Fatal(err)
		}
		copyFile(t, other+".pub", filepath.Join(trusted, "other.pub"))
		defer func() {
			os.Remove(filepath.Join(trusted, "other.pub"))
			writeFile(t, filepath.Join(trusted, "signing.pub"), orig)
		}()
		r := m.boot(t, a.Options)
		m.refused(t, r, "signature check failed", a.Deployment)
	})

	t.Run("revoked key", func(t *testing.T) {
		revoked := filepath.Join(m.keys, "revoked.d")
		if err := os.MkdirAll(revoked, 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, m.key+".pub", filepath.Join(revoked, "signing.pub"))
		defer os.RemoveAll(revoked)
		r := m.boot(t, a.Options)
		m.refused(t, r, "trusted keys check failed", "revoked", a.Deployment)
	})

	t.Run("command line digest differs from the signed one", func(t *testing.T) {
		other := strings.Repeat("ab", 32)
		opts := strings.Replace(a.Options, "composefs="+a.ImageDigest, "composefs="+other, 1)
		r := m.boot(t, opts)
		m.refused(t, r, "command line digest check failed", "expected composefs="+a.ImageDigest+" (signed), actual composefs="+other, a.Deployment)
	})

	t.Run("deployment path outside the sysroot", func(t *testing.T) {
		escape := "/cfs/deploy/os/deploy/../../../../etc"
		opts := strings.Replace(a.Options, "cfs.deployment="+a.Deployment, "cfs.deployment="+escape, 1)
		r := m.boot(t, opts)
		m.refused(t, r, "deployment path check failed", "not a clean path")

		// A symbolic link that leads out of the deployment tree.
		evil := filepath.Join(m.physical, "cfs/deploy/evil/deploy")
		if err := os.MkdirAll(evil, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(filepath.Dir(evil))
		name := filepath.Base(a.Deployment)
		if err := os.Symlink(m.dir, filepath.Join(evil, name)); err != nil {
			t.Fatal(err)
		}
		path := "/cfs/deploy/evil/deploy/" + name
		opts = strings.Replace(a.Options, "cfs.deployment="+a.Deployment, "cfs.deployment="+path, 1)
		r = m.boot(t, opts)
		m.refused(t, r, "deployment path check failed", "symbolic link", path)
	})

	t.Run("missing TPM in required mode", func(t *testing.T) {
		r := m.boot(t, a.Options, "--tpm", "device:/dev/no-such-tpm")
		m.refused(t, r, "tpm check failed", "expected a TPM (mode required), actual none reachable", a.Deployment)
	})

	t.Run("PCR 7 changed", func(t *testing.T) {
		m.tpm.Tool(t, "tpm2_pcrextend", "7:sha256="+strings.Repeat("11", 32))
		defer m.reboot(t)
		r := m.boot(t, a.Options)
		m.refused(t, r, "tpm check failed", "PCR 7", a.Deployment)
	})

	t.Run("verity required without fs-verity", func(t *testing.T) {
		m.writeConfig(t, "verity = require\ntpm = required\n")
		defer m.writeConfig(t, "verity = objects\ntpm = required\n")
		r := m.boot(t, a.Options)
		if r.code != exitVerify {
			t.Fatalf("want exit 4, got %s", r)
		}
		m.refused(t, r, "fs-verity check failed", "verity = objects", a.Deployment)
	})

	t.Run("command line cannot weaken the policy", func(t *testing.T) {
		r := m.boot(t, a.Options+" cfs.tpm=off cfs.verity=none", "--tpm", "device:/dev/no-such-tpm")
		m.refused(t, r, "tpm check failed", "mode required")
	})

	t.Run("rollback", func(t *testing.T) {
		// Build and deploy 2.0 (rollback index 2), boot it, bless it.
		writeRootfs(t, filepath.Join(m.dir, "rootfs2"), "2.0")
		must(t, "cfs-commit", "build", "--repo", m.repo, "--ref", ref, "--key", m.key+".key", "--version", "2.0", "--rollback-index", "2", filepath.Join(m.dir, "rootfs2"))
		must(t, "cfs-deploy", "--sysroot", m.physical, "pull", m.repo, ref)
		must(t, "cfs-deploy", "--sysroot", m.physical, "--tpm", m.tpm.URI(), "switch", ref)
		var b deployment
		for _, d := range m.status(t) {
			if d.Default {
				b = d
			}
		}
		if b.Commit == a.Commit || b.Commit == "" {
			t.Fatalf("2.0 is not the default: %+v", m.status(t))
		}
		r := m.boot(t, b.Options)
		if r.code != 0 {
			t.Fatalf("boot 2.0: %s", r)
		}
		fstest.AssertSameTree(t, filepath.Join(m.dir, "rootfs2", "usr"), filepath.Join(m.sysroot, "usr"), fstest.Options{SkipDirTimes: true})
		if got := readFile(t, filepath.Join(m.sysroot, "etc/written-at-boot")); string(got) != "persisted etc/written-at-boot\n" {
			t.Fatalf("the /etc change did not carry over to 2.0: %q", got)
		}
		out := must(t, "cfs-initramfs", "bless", "--run-dir", m.run, "--tpm", m.tpm.URI(), "--json")
		var res initramfs.BlessResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.After != 2 || res.RollbackIndex != 2 {
			t.Fatalf("bless: %s %v", out, err)
		}
		m.shutdown(t)
		m.reboot(t)
		// The old, validly signed 1.0 (with its genuine blob) is refused.
		r = m.boot(t, a.Options)
		m.refused(t, r, "rollback check failed", "expected rollback index >= 2 (TPM counter), actual rollback index 1", a.Deployment)
	})

	// The real boot's ways to the physical root: systemd's sysroot.mount
	// put root= on the sysroot, or mount-root mounts root= itself.
	defaultDep := func() deployment {
		for _, d := range m.status(t) {
			if d.Default {
				return d
			}
		}
		t.Fatal("no default deployment")
		return deployment{}
	}
	bootPhysical := func(t *testing.T, d deployment, opts string) {
		r := run(t, "cfs-initramfs", "mount-root", "--cmdline", opts, "--sysroot", m.sysroot, "--run-dir", m.run,
			"--keys", m.keys, "--config", m.config, "--tpm", m.tpm.URI(), "--json")
		if r.code != 0 {
			t.Fatalf("mount-root: %s", r)
		}
		rec, err := initramfs.ReadRecord(m.run)
		if err != nil {
			t.Fatal(err)
		}
		phys := filepath.Join(m.run, "cfs/physical")
		if rec.PhysicalRoot != phys || rec.Deployment != d.Deployment || !rec.TPM.Unsealed {
			t.Fatalf("record %+v", rec)
		}
		if !slices.Contains(testutil.MountPoints(t), phys) {
			t.Fatalf("%s is not mounted", phys)
		}
		// The physical root's own mount is read-only; /etc is writable.
		if err := os.WriteFile(filepath.Join(phys, "cfs/x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing the physical root: %v, want EROFS", err)
		}
		if err := os.WriteFile(filepath.Join(m.sysroot, "etc/from-"+filepath.Base(t.Name())), nil, 0o644); err != nil {
			t.Errorf("/etc not writable: %v", err)
		}
		if _, err := os.Stat(filepath.Join(m.sysroot, "usr/bin/hello")); err != nil {
			t.Errorf("the booted tree: %v", err)
		}
		sh(t, "umount", "-R", m.sysroot)
		sh(t, "umount", phys)
		if err := os.RemoveAll(m.run); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(m.run, 0o755); err != nil {
			t.Fatal(err)
		}
		m.reboot(t)
	}
	t.Run("physical root from root=", func(t *testing.T) {
		// The kernel refuses a read-only mount of a device mounted
		// read-write elsewhere: take the disk off the test's mount point
		// and give it its own loop device, as a real disk.
		d := defaultDep()
		sh(t, "umount", m.physical)
		dev := strings.TrimSpace(sh(t, "losetup", "-f", "--show", filepath.Join(m.dir, "disk.img")))
		defer func() {
			sh(t, "losetup", "-d", dev)
			sh(t, "mount", "-o", "loop", filepath.Join(m.dir, "disk.img"), m.physical)
		}()
		bootPhysical(t, d, strings.Replace(d.Options, "root=LABEL=cfs-sysroot", "root="+dev+" rootfstype=ext4", 1))
	})
	t.Run("physical root moved from the mounted sysroot", func(t *testing.T) {
		sh(t, "mount", "--bind", m.physical, m.sysroot) // what sysroot.mount does
		d := defaultDep()
		bootPhysical(t, d, d.Options)
	})
	t.Run("refusal puts the mounted sysroot back", func(t *testing.T) {
		sh(t, "mount", "--bind", m.physical, m.sysroot)
		defer sh(t, "umount", m.sysroot)
		d := defaultDep()
		opts := strings.Replace(d.Options, "composefs="+d.ImageDigest, "composefs="+strings.Repeat("cd", 32), 1)
		r := run(t, "cfs-initramfs", "mount-root", "--cmdline", opts, "--sysroot", m.sysroot, "--run-dir", m.run,
			"--keys", m.keys, "--config", m.config, "--tpm", m.tpm.URI())
		if r.code != exitVerify || !strings.Contains(r.stderr, "command line digest check failed") {
			t.Fatalf("want a refusal, got %s", r)
		}
		if _, err := os.Stat(filepath.Join(m.sysroot, "cfs/config")); err != nil {
			t.Fatalf("the physical root is not back on the sysroot: %v", err)
		}
		if left := mountsUnder(t, m.run); len(left) > 0 {
			t.Fatalf("refused boot left mounts: %v", left)
		}
	})

	t.Run("if-present without a TPM boots on signatures", func(t *testing.T) {
		m.writeConfig(t, "verity = objects\ntpm = if-present\n")
		defer m.writeConfig(t, "verity = objects\ntpm = required\n")
		r := m.boot(t, a.Options, "--tpm", "device:/dev/no-such-tpm")
		if r.code != 0 {
			t.Fatalf("if-present without TPM: %s", r)
		}
		if !strings.Contains(r.stderr, "no TPM (mode if-present)") {
			t.Errorf("no warning about the missing TPM:\n%s", r.stderr)
		}
		rec, err := initramfs.ReadRecord(m.run)
		if err != nil || rec.TPM.Present || rec.TPM.Measured || rec.TPM.Note == "" {
			t.Fatalf("record %+v %v", rec, err)
		}
		m.shutdown(t)
	})
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
