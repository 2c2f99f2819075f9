// Package units checks what cfs installs into the boot: the systemd units
// (systemd-analyze accepts them and the dependency graphs they join) and the
// dracut module cfs (Debian's dracut builds an initramfs with it that holds
// the helper, the units, the keys and the configuration; it refuses to build
// one that could not verify a boot).
package units

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/initramfs"
	"github.com/cfs-dev/cfs/internal/testutil"
	"github.com/cfs-dev/cfs/tpm"
)

const moduleDir = "dracut/modules.d/50cfs"

// binDir holds the cfs binaries the tests build, shared by the tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cfs-units-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// cmdExists reports whether ./cmd/name exists.
func cmdExists(t *testing.T, name string) bool {
	_, err := os.Stat(filepath.Join(testutil.RepoRoot(t), "cmd", name))
	return err == nil
}

// buildCmd builds ./cmd/name (static, as `make install` does for
// cfs-initramfs) once per test binary and returns its path.
func buildCmd(t *testing.T, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	out := filepath.Join(binDir, name)
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", out, "./cmd/"+name)
	cmd.Dir = testutil.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	built[name] = out
	return out
}

// analyze runs systemd-analyze with extra environment and returns its
// output; a non-zero exit fails the test.
func analyze(t *testing.T, env []string, args ...string) string {
	t.Helper()
	tool := testutil.RequireTool(t, "systemd-analyze")
	cmd := exec.CommandContext(t.Context(), tool, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

var cfsBinRef = regexp.MustCompile(`/usr/bin/(cfs-[a-z0-9.-]+)`)

// TestUnitsVerify runs `systemd-analyze verify` on every unit in systemd/,
// with the cfs binaries they run built into a temporary directory the unit
// files are rewritten to point at.
func TestUnitsVerify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	root := testutil.RepoRoot(t)
	units, err := filepath.Glob(filepath.Join(root, "systemd", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in systemd/: %v", err)
	}
	dir := t.TempDir()
	var args, missing []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		refs := cfsBinRef.FindAllStringSubmatch(text, -1)
		if len(refs) == 0 {
			t.Errorf("%s runs no cfs binary", filepath.Base(u))
		}
		ok := true
		for _, m := range refs {
			if !cmdExists(t, m[1]) {
				missing = append(missing, filepath.Base(u)+" needs ./cmd/"+m[1])
				ok = false
				continue
			}
			text = strings.ReplaceAll(text, m[0], buildCmd(t, m[1]))
		}
		if !ok {
			continue
		}
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	if len(args) > 0 {
		if out := analyze(t, nil, append([]string{"verify", "--man=no"}, args...)...); out != "" {
			t.Fatalf("systemd-analyze verify:\n%s", out)
		}
	}
	if len(missing) > 0 {
		testutil.Skip(t, "not verified yet: "+strings.Join(missing, ", "))
	}
}

// unit is a parsed unit file: "Section.Key" -> the words of its values, in
// order (an empty assignment resets the list, as systemd does).
type unit map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", path, line)
			}
			key := section + "." + strings.TrimSpace(k)
			if v = strings.TrimSpace(v); v == "" {
				delete(u, key)
				continue
			}
			if strings.HasPrefix(key, "Service.Exec") {
				u[key] = append(u[key], v)
			} else {
				u[key] = append(u[key], strings.Fields(v)...)
			}
		}
	}
	return u
}

// TestUnitDependencies checks the dependencies issue 6 asks of the units.
func TestUnitDependencies(t *testing.T) {
	root := testutil.RepoRoot(t)
	type rule struct {
		key      string
		has, not []string
	}
	for name, rules := range map[string][]rule{
		"cfs-mount-root.service": {
			{key: "Unit.DefaultDependencies", has: []string{"no"}},
			{key: "Unit.ConditionKernelCommandLine", has: []string{"composefs"}},
			{key: "Unit.ConditionPathExists", has: []string{"/etc/initrd-release"}},
			// root= may be mounted by cfs-initramfs itself: wanted, not required.
			{key: "Unit.After", has: []string{"sysroot.mount", "tpm2.target"}},
			{key: "Unit.Wants", has: []string{"sysroot.mount"}},
			{key: "Unit.Requires", not: []string{"sysroot.mount", "tpm2.target"}},
			{key: "Unit.Before", has: []string{"initrd-root-fs.target", "initrd-switch-root.target"}},
			{key: "Unit.OnFailure", has: []string{"emergency.target"}},
			{key: "Unit.OnFailureJobMode", has: []string{"isolate"}},
			{key: "Service.Type", has: []string{"oneshot"}},
			{key: "Service.RemainAfterExit", has: []string{"yes"}},
			{key: "Service.ExecStart", has: []string{"/usr/bin/cfs-initramfs mount-root"}},
			{key: "Service.StandardError", has: []string{"journal+console"}},
			{key: "Install.WantedBy", has: []string{"initrd-root-fs.target"}},
		},
		"cfs-bless.service": {
			// After boot-complete.target, pulling it in; never before it.
			{key: "Unit.Requires", has: []string{"boot-complete.target"}},
			{key: "Unit.After", has: []string{"boot-complete.target"}},
			{key: "Unit.Before", not: []string{"boot-complete.target"}},
			{key: "Install.RequiredBy", not: []string{"boot-complete.target"}},
			{key: "Install.WantedBy", has: []string{"basic.target"}, not: []string{"boot-complete.target"}},
			{key: "Unit.DefaultDependencies", has: []string{"no"}},
			{key: "Unit.ConditionPathExists", has: []string{"/run/cfs/booted.json"}},
			{key: "Service.ExecStart", has: []string{"/usr/bin/cfs-initramfs bless"}},
		},
	} {
		u := parseUnit(t, filepath.Join(root, "systemd", name))
		for _, r := range rules {
			for _, v := range r.has {
				if !slices.Contains(u[r.key], v) {
					t.Errorf("%s: %s = %q, want %q in it", name, r.key, u[r.key], v)
				}
			}
			for _, v := range r.not {
				if slices.Contains(u[r.key], v) {
					t.Errorf("%s: %s = %q, must not hold %q", name, r.key, u[r.key], v)
				}
			}
		}
	}
}

// vendorUnitDir returns the directory of systemd's own units.
func vendorUnitDir(t *testing.T) string {
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "boot-complete.target")); err == nil {
			return d
		}
	}
	testutil.Skip(t, "systemd's boot-complete.target not found")
	return ""
}

// TestBlessNeverBlocksBoot enables cfs-bless.service (as its [Install]
// says) next to a boot health check of the kind
// systemd.io/AUTOMATIC_BOOT_ASSESSMENT describes (after multi-user.target,
// required by and before boot-complete.target) and has systemd-analyze
// build the boot transactions over systemd's own units: no ordering cycle.
// A control variant with default dependencies, wanted by
// multi-user.target, must show the cycle, which proves the check can fail.
func TestBlessNeverBlocksBoot(t *testing.T) {
	root := testutil.RepoRoot(t)
	vendor := vendorUnitDir(t)
	self, err := os.Executable() // any executable will do for ExecStart
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "systemd", "cfs-bless.service"))
	if err != nil {
		t.Fatal(err)
	}
	bless := strings.ReplaceAll(string(b), "/usr/bin/cfs-initramfs", self)
	const health = "[Unit]\nDescription=boot health check\nAfter=multi-user.target\nBefore=boot-complete.target\n" +
		"[Service]\nType=oneshot\nExecStart=/bin/true\n"

	setup := func(blessText, wantedBy string) string {
		dir := t.TempDir()
		for name, text := range map[string]string{"cfs-bless.service": blessText, "cfs-test-health.service": health} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for link, target := range map[string]string{
			"boot-complete.target.requires/cfs-test-health.service": "../cfs-test-health.service",
			wantedBy + ".wants/cfs-bless.service":                   "../cfs-bless.service",
		} {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(link)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}

	wantedBy := parseUnit(t, filepath.Join(root, "systemd", "cfs-bless.service"))["Install.WantedBy"]
	if len(wantedBy) != 1 {
		t.Fatalf("cfs-bless.service: WantedBy = %q, want one target", wantedBy)
	}
	good := setup(bless, wantedBy[0])
	for _, target := range []string{"basic.target", "multi-user.target", "graphical.target", "boot-complete.target", "cfs-bless.service"} {
		out := analyze(t, []string{"SYSTEMD_UNIT_PATH=" + good + ":" + vendor}, "verify", "--man=no", target)
		if strings.Contains(out, "cycle") || strings.Contains(out, "cfs-") {
			t.Errorf("verify %s with cfs-bless.service enabled:\n%s", target, out)
		} else if out != "" {
			t.Logf("verify %s (systemd's own units):\n%s", target, out)
		}
	}

	bad := setup(strings.Replace(bless, "DefaultDependencies=no\n", "", 1), "multi-user.target")
	out := analyze(t, []string{"SYSTEMD_UNIT_PATH=" + bad + ":" + vendor}, "verify", "--man=no", "multi-user.target")
	if !strings.Contains(out, "ordering cycle") {
		t.Fatalf("control: a bless unit with default dependencies wanted by multi-user.target shows no ordering cycle:\n%s", out)
	}
}

// TestTPM2Generator runs cfs-tpm2-generator against fake initramfs roots:
// it orders cfs-mount-root.service after /dev/tpmrm0 only when the firmware
// announces a TPM2 whose device is not there yet and the TPM is in use, and
// systemd-analyze accepts the unit with the drop-in it writes.
func TestTPM2Generator(t *testing.T) {
	gen := filepath.Join(testutil.RepoRoot(t), moduleDir, "cfs-tpm2-generator.sh")
	const dropIn = "cfs-mount-root.service.d/50-cfs-tpm2.conf"
	type env struct {
		notInitrd, device, noFirmware bool
		cmdline, conf                 string
	}
	const cmd = "root=/dev/vda2 ro composefs=0123abcd cfs.deployment=/cfs/deploy/default/deploy/x.0"
	for _, tc := range []struct {
		name string
		env  env
		wait bool
	}{
		{"firmware TPM, no device yet", env{cmdline: cmd}, true},
		{"bare composefs word", env{cmdline: "root=/dev/vda2 composefs"}, true},
		{"not in the initrd", env{notInitrd: true, cmdline: cmd}, false},
		{"no composefs on the command line", env{cmdline: "root=/dev/vda2 xcomposefs=1 composefsx"}, false},
		{"device already there", env{device: true, cmdline: cmd}, false},
		{"no TPM announced", env{noFirmware: true, cmdline: cmd}, false},
		{"tpm = off", env{cmdline: cmd, conf: "verity = require\ntpm = off\n"}, false},
		{"tpm = off made stricter by cfs.tpm=if-present", env{cmdline: cmd + " cfs.tpm=if-present", conf: "tpm = off\n"}, true},
		{"tpm = if-present, cfs.tpm=off is weaker", env{cmdline: cmd + " cfs.tpm=off", conf: "tpm = if-present\n"}, true},
		{"tpm unset means required", env{cmdline: cmd + " cfs.tpm=off", conf: "verity = objects\n"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, out := t.TempDir(), t.TempDir()
			files := map[string]string{"proc/cmdline": tc.env.cmdline + "\n"}
			if !tc.env.notInitrd {
				files["etc/initrd-release"] = "NAME=dracut\n"
			}
			if tc.env.device {
				files["dev/tpmrm0"] = ""
			}
			if !tc.env.noFirmware {
				files["sys/firmware/acpi/tables/TPM2"] = "TPM2"
			}
			if tc.env.conf != "" {
				files["etc/cfs/initramfs.conf"] = tc.env.conf
			}
			for p, text := range files {
				writeFile(t, filepath.Join(root, p), text, 0o644)
			}
			cmd := exec.CommandContext(t.Context(), "sh", gen, out, out+"-early", out+"-late")
			cmd.Env = append(os.Environ(), "CFS_GENERATOR_ROOT="+root)
			if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
				t.Fatalf("generator: %v\n%s", err, b)
			}
			b, err := os.ReadFile(filepath.Join(out, dropIn))
			if !tc.wait {
				if err == nil {
					t.Fatalf("generator wrote %s:\n%s", dropIn, b)
				}
				entries, _ := os.ReadDir(out)
				if len(entries) != 0 {
					t.Fatalf("generator wrote %d entries", len(entries))
				}
				return
			}
			if err != nil {
				t.Fatalf("generator wrote no drop-in: %v", err)
			}
			u := parseUnit(t, filepath.Join(out, dropIn))
			if !slices.Equal(u["Unit.Wants"], []string{"dev-tpmrm0.device"}) || !slices.Equal(u["Unit.After"], []string{"dev-tpmrm0.device"}) {
				t.Fatalf("drop-in = %v", u)
			}
		})
	}

	t.Run("verify", func(t *testing.T) {
		testutil.RequireTool(t, "systemd-analyze")
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "systemd", "cfs-mount-root.service"))
		if err != nil {
			t.Fatal(err)
		}
		root, dir := t.TempDir(), t.TempDir()
		writeFile(t, filepath.Join(root, "etc/initrd-release"), "", 0o644)
		writeFile(t, filepath.Join(root, "proc/cmdline"), cmd, 0o644)
		writeFile(t, filepath.Join(root, "sys/firmware/acpi/tables/TPM2"), "", 0o644)
		gcmd := exec.CommandContext(t.Context(), "sh", gen, dir)
		gcmd.Env = append(os.Environ(), "CFS_GENERATOR_ROOT="+root)
		if out, err := gcmd.CombinedOutput(); err != nil {
			t.Fatalf("generator: %v\n%s", err, out)
		}
		unitPath := filepath.Join(dir, "cfs-mount-root.service")
		writeFile(t, unitPath, strings.ReplaceAll(string(b), "/usr/bin/cfs-initramfs", self), 0o644)
		if out := analyze(t, nil, "verify", "--man=no", unitPath); out != "" {
			t.Fatalf("systemd-analyze verify with the drop-in:\n%s", out)
		}
	})
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

// testSysroot is a physical sysroot's cfs/ as cfs-deploy writes it: real
// signing keys, the TPM configuration, the sysroot configuration.
type testSysroot struct {
	dir      string
	trusted  []string // key names
	revoked  []string
	tpmMode  cmdline.TPMMode // "" for no cfs/tpm
	enrolled bool
	// threshold of cfs/config (0: no cfs/config)
	threshold int
}

func (s testSysroot) write(t *testing.T) string {
	t.Helper()
	if s.dir == "" {
		s.dir = t.TempDir()
	}
	key := func(sub, name string) {
		_, pub, err := sign.Keygen(sign.KeyEd25519, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(s.dir, sub, name+".pub"), string(pub), 0o644)
	}
	for _, n := range s.trusted {
		key(deploy.TrustedDir, n)
	}
	for _, n := range s.revoked {
		key(deploy.RevokedDir, n)
	}
	if s.tpmMode != "" {
		c := deploy.TPMConfig{Mode: s.tpmMode, PCRs: []int{7}, MeasurePCR: 15}
		writeFile(t, filepath.Join(s.dir, deploy.TPMConfigFile), string(c.Marshal()), 0o644)
	}
	if s.enrolled {
		_, pub, err := sign.Keygen(sign.KeyECDSAP256, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The shape of a real enrollment; its TPM names are made up (no TPM
		// is needed to list it).
		b, err := json.Marshal(tpm.Enrollment{Version: 1, SRKName: tpm.HexBytes{0, 11, 1, 2}, PolicyKey: string(pub)})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(s.dir, deploy.TPMEnrollmentFile), string(b), 0o644)
	}
	if s.threshold > 0 {
		b, err := json.Marshal(deploy.Config{Format: deploy.ConfigFormat, Stateroot: "default", Threshold: s.threshold})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(s.dir, deploy.ConfigFile), string(b), 0o644)
	}
	return s.dir
}

// TestInitramfsConfDefaults runs cfs-initramfs-conf.sh, which writes the
// initramfs configuration when the host has none, on sysroots as cfs-deploy
// writes them, and parses the result with the initramfs package.
func TestInitramfsConfDefaults(t *testing.T) {
	script := filepath.Join(testutil.RepoRoot(t), moduleDir, "cfs-initramfs-conf.sh")
	for _, tc := range []struct {
		name    string
		sys     testSysroot
		corrupt map[string]string // files overwritten after writing the sysroot
		want    initramfs.Config
		fail    string
	}{
		{name: "not enrolled", sys: testSysroot{},
			want: initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMIfPresent, Threshold: 1}},
		{name: "enrolled required", sys: testSysroot{tpmMode: cmdline.TPMRequired, enrolled: true, threshold: 1},
			want: initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMRequired, Threshold: 1}},
		{name: "enrolled if-present, threshold 3", sys: testSysroot{tpmMode: cmdline.TPMIfPresent, threshold: 3},
			want: initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMIfPresent, Threshold: 3}},
		{name: "enrolled off", sys: testSysroot{tpmMode: cmdline.TPMOff},
			want: initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMOff, Threshold: 1}},
		{name: "threshold 0 means 1", sys: testSysroot{},
			corrupt: map[string]string{deploy.ConfigFile: `{"format":1,"stateroot":"x","threshold":0}`},
			want:    initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMIfPresent, Threshold: 1}},
		{name: "bad tpm mode", sys: testSysroot{},
			corrupt: map[string]string{deploy.TPMConfigFile: "mode = maybe\npcrs = 7\nmeasure-pcr = 15\n"},
			fail:    "mode 'maybe'"},
		{name: "no tpm mode", sys: testSysroot{},
			corrupt: map[string]string{deploy.TPMConfigFile: "pcrs = 7\n"},
			fail:    "mode ''"},
		{name: "threshold too high", sys: testSysroot{},
			corrupt: map[string]string{deploy.ConfigFile: `{"format":1,"threshold":65}`},
			fail:    "threshold 65"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.sys.write(t)
			for p, text := range tc.corrupt {
				writeFile(t, filepath.Join(dir, p), text, 0o644)
			}
			cmd := exec.CommandContext(t.Context(), "bash", script, dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tc.fail != "" {
				if err == nil || stdout.Len() > 0 || !strings.Contains(stderr.String(), tc.fail) {
					t.Fatalf("want a failure naming %q, got %v, stdout %q, stderr %q", tc.fail, err, stdout.String(), stderr.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			got, err := initramfs.ParseConfig(stdout.Bytes())
			if err != nil {
				t.Fatalf("initramfs.ParseConfig: %v\n%s", err, stdout.String())
			}
			if got != tc.want {
				t.Fatalf("config = %+v, want %+v\n%s", got, tc.want, stdout.String())
			}
		})
	}
}

// TestModuleSetupFunctions sources module-setup.sh the way dracut does and
// calls check, depends and installkernel with instmods stubbed out: the
// module is included only on request, depends on systemd's initrd, and
// installs its kernel modules even in hostonly mode. (The dracut runs below
// exercise install and, on a kernel tree, installkernel for real.)
func TestModuleSetupFunctions(t *testing.T) {
	bash := testutil.RequireTool(t, "bash")
	setup := filepath.Join(testutil.RepoRoot(t), moduleDir, "module-setup.sh")
	script := `
hostonly=-h
instmods() { printf 'instmods hostonly=[%s] %s\n' "$hostonly" "$*"; }
. "$1"
check; echo "check=$?"
depends; echo "depends=$?"
installkernel; echo "installkernel=$?"
echo "hostonly=[$hostonly]"
`
	out, err := exec.CommandContext(t.Context(), bash, "-c", script, "test", setup).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "check=255\n" +
		"systemd systemd-initrd systemd-udevd\ndepends=0\n" +
		"instmods hostonly=[] erofs overlay loop\n" +
		"instmods hostonly=[] tpm_tis tpm_crb\ninstallkernel=0\n" +
		"hostonly=[-h]\n"
	if string(out) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
}

// TestModuleConfigCheck compares the module's build-time check of
// initramfs.conf with the parser cfs-initramfs uses at boot: the same files
// are accepted, with the same tpm mode, and the same are refused.
func TestModuleConfigCheck(t *testing.T) {
	bash := testutil.RequireTool(t, "bash")
	setup := filepath.Join(testutil.RepoRoot(t), moduleDir, "module-setup.sh")
	dir := t.TempDir()
	for i, conf := range []string{
		"",
		"# only a comment\n\n",
		"verity = require\ntpm = required\nthreshold = 1\n",
		"verity = objects\ntpm = if-present\nthreshold = 64\n",
		"  tpm=off  \n  # indented comment\nverity= none",
		"\tthreshold =\t12\n",
		"tpm = maybe\n",
		"tpm = Required\n",
		"verity = bogus\n",
		"threshold = 0\n",
		"threshold = 65\n",
		"threshold = 07\n",
		"threshold = -1\n",
		"threshold = 1x\n",
		"foo = 1\n",
		"tpm = off\ntpm = off\n",
		"no equals sign\n",
		"tpm = off # trailing comment\n",
	} {
		path := filepath.Join(dir, fmt.Sprintf("%d.conf", i))
		writeFile(t, path, conf, 0o644)
		b := []byte(conf)
		want, perr := initramfs.ParseConfig(b)
		out, err := exec.CommandContext(t.Context(), bash, "-c", `. "$1"; _cfs_check_conf "$2"`, "test", setup, path).CombinedOutput()
		got := strings.TrimSpace(string(out))
		switch {
		case perr == nil && err != nil:
			t.Errorf("%q: cfs-initramfs accepts it (%+v), the module refuses it: %s", b, want, got)
		case perr != nil && err == nil:
			t.Errorf("%q: cfs-initramfs refuses it (%v), the module accepts it (tpm %s)", b, perr, got)
		case perr == nil && got != string(want.TPM):
			t.Errorf("%q: the module reads tpm %q, cfs-initramfs %q", b, got, want.TPM)
		}
	}
}

// TestShellcheck lints the dracut module's scripts.
func TestShellcheck(t *testing.T) {
	sc := testutil.RequireTool(t, "shellcheck")
	scripts, err := filepath.Glob(filepath.Join(testutil.RepoRoot(t), moduleDir, "*.sh"))
	if err != nil || len(scripts) < 3 {
		t.Fatalf("scripts: %v %v", scripts, err)
	}
	if out, err := exec.CommandContext(t.Context(), sc, append([]string{"-x"}, scripts...)...).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

// installTree is the output of `make install DESTDIR=...` with dracut's own
// directory overlaid with it.
type installTree struct {
	dest   string // DESTDIR
	bindir string // $DESTDIR/usr/bin
	units  string // $DESTDIR/usr/lib/systemd/system
	base   string // a dracutbasedir: /usr/lib/dracut plus modules.d/50cfs
}

// makeInstall runs `make install` into a temporary DESTDIR and checks what
// it installed.
func makeInstall(t *testing.T) installTree {
	t.Helper()
	make := testutil.RequireTool(t, "make")
	root := testutil.RepoRoot(t)
	tmp := t.TempDir()
	it := installTree{dest: filepath.Join(tmp, "dest")}
	it.bindir = filepath.Join(it.dest, "usr/bin")
	it.units = filepath.Join(it.dest, "usr/lib/systemd/system")
	// -o deps: a test does not install packages (make test runs deps first).
	cmd := exec.CommandContext(t.Context(), make, "-s", "-o", "deps", "install", "DESTDIR="+it.dest, "BINDIR="+filepath.Join(tmp, "bin"))
	cmd.Dir = root
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}

	mode := func(rel string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(filepath.Join(it.dest, rel))
		if err != nil {
			t.Errorf("make install: %v", err)
		} else if fi.Mode().Perm() != want || !fi.Mode().IsRegular() {
			t.Errorf("make install: %s mode %v, want %v", rel, fi.Mode(), want)
		}
	}
	for _, b := range []string{"usr/bin/cfs-commit", "usr/bin/cfs-deploy", "usr/bin/cfs-initramfs", "sbin/mount.cfs"} {
		mode(b, 0o755)
	}
	units, _ := filepath.Glob(filepath.Join(root, "systemd", "*.service"))
	for _, u := range units {
		mode("usr/lib/systemd/system/"+filepath.Base(u), 0o644)
	}
	files, _ := os.ReadDir(filepath.Join(root, moduleDir))
	for _, f := range files {
		want := os.FileMode(0o644)
		if strings.HasSuffix(f.Name(), ".sh") {
			want = 0o755
		}
		rel := "usr/lib/dracut/modules.d/50cfs/" + f.Name()
		mode(rel, want)
		a, _ := os.ReadFile(filepath.Join(root, moduleDir, f.Name()))
		b, _ := os.ReadFile(filepath.Join(it.dest, rel))
		if !bytes.Equal(a, b) {
			t.Errorf("make install: %s differs from %s", rel, f.Name())
		}
	}
	// The initramfs gets a static cfs-initramfs (no program interpreter).
	if f, err := elf.Open(filepath.Join(it.bindir, "cfs-initramfs")); err != nil {
		t.Errorf("installed cfs-initramfs: %v", err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("installed cfs-initramfs is dynamically linked")
			}
		}
		f.Close()
	}
	// Opt-in only: no dracut.conf.d snippet is installed.
	filepath.WalkDir(it.dest, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(p, "dracut.conf") {
			t.Errorf("make install installed %s: the module must be opt-in", p)
		}
		return err
	})
	if t.Failed() {
		t.FailNow()
	}

	// dracut reads modules from $dracutbasedir/modules.d: a copy of
	// Debian's /usr/lib/dracut (symlinks) with the installed module added,
	// so that nothing is written into the host's /usr/lib/dracut.
	const sys = "/usr/lib/dracut"
	it.base = filepath.Join(tmp, "dracut")
	link := func(old, new string) {
		if err := os.Symlink(old, new); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(sys)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(it.base, "modules.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "modules.d" && e.Name() != "dracut.conf.d" {
			link(filepath.Join(sys, e.Name()), filepath.Join(it.base, e.Name()))
		}
	}
	mods, err := os.ReadDir(filepath.Join(sys, "modules.d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if strings.HasSuffix(m.Name(), "cfs") {
			t.Fatalf("the host already has a dracut module %s", m.Name())
		}
		link(filepath.Join(sys, "modules.d", m.Name()), filepath.Join(it.base, "modules.d", m.Name()))
	}
	link(filepath.Join(it.dest, "usr/lib/dracut/modules.d/50cfs"), filepath.Join(it.base, "modules.d/50cfs"))
	return it
}

// dracut runs Debian's dracut with the host's configuration replaced by
// the given cfs_* variables (in a dracut.conf.d snippet, as users write
// them), and returns the image path (absent when dracut failed) and output.
func (it installTree) dracut(ctx context.Context, t *testing.T, vars map[string]string, args ...string) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString("add_dracutmodules+=\" cfs \"\n")
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if strings.ContainsAny(vars[k], "'\n") {
			t.Fatalf("bad value %q", vars[k])
		}
		fmt.Fprintf(&conf, "%s='%s'\n", k, vars[k])
	}
	writeFile(t, filepath.Join(dir, "conf.d", "50-cfs.conf"), conf.String(), 0o644)
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "initramfs.img")
	full := []string{"--conf", "/dev/null", "--confdir", filepath.Join(dir, "conf.d"), "--tmpdir", filepath.Join(dir, "tmp"),
		"--no-hostonly", "--no-compress", "--no-early-microcode"}
	full = append(append(full, args...), img)
	cmd := exec.CommandContext(ctx, "dracut", full...)
	cmd.Env = append(os.Environ(), "dracutbasedir="+it.base)
	out, err := cmd.CombinedOutput()
	return img, string(out), err
}

// listing is what lsinitrd shows: the dracut modules and every path (with
// its symlink target, or "").
type listing struct {
	modules []string
	paths   map[string]string
}

var modeField = regexp.MustCompile(`^[-dlcbps][-rwxsStT]{9}$`)

func lsinitrd(t *testing.T, img string) listing {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "lsinitrd", img).CombinedOutput()
	if err != nil {
		t.Fatalf("lsinitrd: %v\n%s", err, out)
	}
	l := listing{paths: map[string]string{}}
	inModules := false
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "dracut modules:":
			inModules = true
		case strings.HasPrefix(line, "===="):
			inModules = false
		case inModules && line != "":
			l.modules = append(l.modules, line)
		default:
			f := strings.Fields(line)
			if len(f) >= 9 && modeField.MatchString(f[0]) {
				target := ""
				if f[0][0] == 'l' && len(f) >= 11 && f[9] == "->" {
					target = f[10]
				}
				l.paths[f[8]] = target
			}
		}
	}
	if len(l.paths) == 0 {
		t.Fatalf("lsinitrd listed nothing:\n%s", out)
	}
	return l
}

// has reports whether the listing holds the path, directly or below the
// lib -> usr/lib symlink of a merged-/usr initramfs.
func (l listing) has(p string) bool {
	if _, ok := l.paths[p]; ok {
		return true
	}
	if rest, ok := strings.CutPrefix(p, "lib/"); ok {
		_, ok := l.paths["usr/lib/"+rest]
		return ok
	}
	return false
}

func unpack(t *testing.T, img string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "lsinitrd", "--unpack", img)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lsinitrd --unpack: %v\n%s", err, out)
	}
	return dir
}

func sameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Error(err)
		return
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s", got, want)
	}
}

func goBuildID(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		t.Fatalf("%s: no Go build id", path)
	}
	b, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDracutModule builds initramfs images with Debian's dracut and the
// module as `make install` installs it, and checks their contents.
func TestDracutModule(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"dracut", "lsinitrd", "cpio", "systemd-analyze"} {
		testutil.RequireTool(t, tool)
	}
	if !cmdExists(t, "cfs-initramfs") {
		testutil.Skip(t, "./cmd/cfs-initramfs does not exist yet")
	}
	it := makeInstall(t)
	built := filepath.Join(it.bindir, "cfs-initramfs")
	base := map[string]string{"cfs_bindir": it.bindir, "cfs_unitdir": it.units}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	// The sysroot of an enrolled machine: two trusted keys, one revoked,
	// tpm mode required, two signatures needed.
	enrolled := testSysroot{trusted: []string{"alice", "bob"}, revoked: []string{"mallory"},
		tpmMode: cmdline.TPMRequired, enrolled: true, threshold: 2}
	enrolled.dir = enrolled.write(t)
	// A machine that is not enrolled, with one trusted key.
	plain := testSysroot{trusted: []string{"carol"}}
	plain.dir = plain.write(t)
	// Enrolled in required mode, but its enrollment is gone.
	lost := testSysroot{trusted: []string{"dave"}, tpmMode: cmdline.TPMRequired}
	lost.dir = lost.write(t)
	_, hostConf := os.Stat(initramfs.DefaultConfigFile)

	t.Run("no-kernel", func(t *testing.T) {
		t.Parallel()
		// What issue 6 names: dracut --no-kernel --add cfs (the snippet adds
		// cfs too), with dracut's defaults otherwise (it strips binaries).
		img, out, err := it.dracut(t.Context(), t, with("cfs_sysroot", enrolled.dir), "--no-kernel", "--add", "cfs")
		if err != nil {
			t.Fatalf("dracut: %v\n%s", err, out)
		}
		l := lsinitrd(t, img)
		if !slices.Contains(l.modules, "cfs") || !slices.Contains(l.modules, "systemd-initrd") {
			t.Errorf("dracut modules = %q, want cfs and systemd-initrd", l.modules)
		}
		for _, p := range []string{
			"usr/bin/cfs-initramfs",
			"lib/systemd/system/cfs-mount-root.service",
			"lib/systemd/system-generators/cfs-tpm2-generator",
			"lib/udev/rules.d/60-cfs-tpm.rules",
			"etc/cfs/initramfs.conf",
			"etc/cfs/trusted.d/alice.pub", "etc/cfs/trusted.d/bob.pub",
			"etc/cfs/revoked.d/mallory.pub",
			"etc/cfs/tpm/enrollment.json",
		} {
			if !l.has(p) {
				t.Errorf("initramfs lacks %s", p)
			}
		}
		const wants = "etc/systemd/system/initrd-root-fs.target.wants/cfs-mount-root.service"
		if target := l.paths[wants]; !strings.HasSuffix(target, "/systemd/system/cfs-mount-root.service") {
			t.Errorf("initramfs: %s -> %q, want a link to the unit", wants, target)
		}

		un := unpack(t, img)
		etc := filepath.Join(un, "etc/cfs")
		for _, k := range [][2]string{
			{"trusted.d/alice.pub", deploy.TrustedDir + "/alice.pub"},
			{"trusted.d/bob.pub", deploy.TrustedDir + "/bob.pub"},
			{"revoked.d/mallory.pub", deploy.RevokedDir + "/mallory.pub"},
			{"tpm/enrollment.json", deploy.TPMEnrollmentFile},
		} {
			sameFile(t, filepath.Join(etc, k[0]), filepath.Join(enrolled.dir, k[1]))
		}
		if _, err := sign.LoadTrustStore(filepath.Join(etc, "trusted.d"),
			sign.TrustOptions{RevokedDir: filepath.Join(etc, "revoked.d"), Threshold: 2}); err != nil {
			t.Errorf("the initramfs keys do not make a trust store: %v", err)
		}
		sameFile(t, filepath.Join(un, "usr/lib/systemd/system/cfs-mount-root.service"),
			filepath.Join(testutil.RepoRoot(t), "systemd/cfs-mount-root.service"))

		// The configuration derived from the sysroot (unless the host has
		// its own, which the module then takes).
		conf, err := os.ReadFile(filepath.Join(etc, "initramfs.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if host, err := os.ReadFile(initramfs.DefaultConfigFile); err == nil {
			t.Logf("the host has %s: the module took it instead of deriving one", initramfs.DefaultConfigFile)
			if !bytes.Equal(conf, host) {
				t.Errorf("initramfs.conf differs from the host's %s", initramfs.DefaultConfigFile)
			}
		} else {
			got, err := initramfs.ParseConfig(conf)
			want := initramfs.Config{Verity: initramfs.VerityRequire, TPM: cmdline.TPMRequired, Threshold: 2}
			if err != nil || got != want {
				t.Errorf("initramfs.conf = %+v, %v, want %+v\n%s", got, err, want, conf)
			}
		}

		// dracut strips binaries: the helper is the built one less its
		// debug sections, and still runs.
		bin := filepath.Join(un, "usr/bin/cfs-initramfs")
		if a, b := goBuildID(t, bin), goBuildID(t, built); a != b {
			t.Errorf("Go build id %q in the initramfs, %q built", a, b)
		}
		ia, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		ib, err := buildinfo.ReadFile(built)
		if err != nil {
			t.Fatal(err)
		}
		if ia.String() != ib.String() {
			t.Errorf("build info differs:\n%s\nbuilt:\n%s", ia, ib)
		}
		if out, err := exec.CommandContext(t.Context(), bin, "mount-root", "--help").CombinedOutput(); err != nil ||
			!strings.Contains(string(out), "--cmdline") {
			t.Errorf("cfs-initramfs from the initramfs: %v\n%s", err, out)
		}

		// The unit, against the initramfs's own units and binary: its
		// ExecStart exists there, and the initrd boot transactions (which
		// pull it in through the wants link) have no ordering cycle.
		for _, u := range []string{"cfs-mount-root.service", "initrd.target", "initrd-switch-root.target"} {
			if out := analyze(t, nil, "verify", "--man=no", "--root="+un, u); out != "" {
				t.Errorf("systemd-analyze verify --root=<initramfs> %s:\n%s", u, out)
			}
		}
	})

	t.Run("explicit-config", func(t *testing.T) {
		t.Parallel()
		// An explicit configuration is taken as it is; no enrollment and no
		// revoked keys are fine with tpm = if-present. --nostrip: the helper
		// is then byte for byte the installed one.
		confFile := filepath.Join(t.TempDir(), "initramfs.conf")
		writeFile(t, confFile, "# mine\nverity = objects\ntpm = if-present\n", 0o644)
		img, out, err := it.dracut(t.Context(), t, with("cfs_sysroot", plain.dir, "cfs_initramfs_conf", confFile),
			"--no-kernel", "-m", "cfs", "--nostrip")
		if err != nil {
			t.Fatalf("dracut: %v\n%s", err, out)
		}
		l := lsinitrd(t, img)
		for _, p := range []string{"etc/cfs/tpm/enrollment.json", "etc/cfs/revoked.d"} {
			if l.has(p) {
				t.Errorf("initramfs has %s", p)
			}
		}
		un := unpack(t, img)
		sameFile(t, filepath.Join(un, "etc/cfs/initramfs.conf"), confFile)
		sameFile(t, filepath.Join(un, "etc/cfs/trusted.d/carol.pub"), filepath.Join(plain.dir, deploy.TrustedDir, "carol.pub"))
		sameFile(t, filepath.Join(un, "usr/bin/cfs-initramfs"), built)
	})

	t.Run("kernel", func(t *testing.T) {
		t.Parallel()
		// With a kernel, installkernel adds erofs, overlay, loop and the TPM
		// drivers. This machine's kernel has no module tree (they are built
		// in), so the run uses a made-up kernel whose modules are all
		// modular; an installed kernel's tree is checked as well when there
		// is one.
		kver, kmoddir := fakeKernel(t)
		checkKernel(t, it, with("cfs_sysroot", enrolled.dir), kver, kmoddir)
		if real := hostKernel(); real != "" {
			checkKernel(t, it, with("cfs_sysroot", enrolled.dir), real, "")
		} else {
			t.Logf("no installed kernel module tree (/lib/modules/%s): only the made-up kernel was checked", uname(t))
		}
	})

	// Refusals: no initramfs that cannot verify a boot.
	emptyDir := t.TempDir()
	noKeys := t.TempDir()
	writeFile(t, filepath.Join(noKeys, "README"), "keys go here\n", 0o644)
	confDir := t.TempDir()
	confDefaultTPM := filepath.Join(confDir, "default-tpm.conf")
	writeFile(t, confDefaultTPM, "verity = require\n", 0o644)
	confBadTPM := filepath.Join(confDir, "bad-tpm.conf")
	writeFile(t, confBadTPM, "tpm = maybe\n", 0o644)
	for _, tc := range []struct {
		name string
		vars map[string]string
		msg  string
		// derived: the case needs the configuration derived from the
		// sysroot, which a host /etc/cfs/initramfs.conf would replace.
		derived bool
	}{
		{name: "no cfs-initramfs", vars: with("cfs_sysroot", enrolled.dir, "cfs_bindir", emptyDir), msg: "cfs-initramfs not found"},
		{name: "no unit", vars: with("cfs_sysroot", enrolled.dir, "cfs_unitdir", emptyDir), msg: "cfs-mount-root.service not found"},
		{name: "no trusted dir", vars: with("cfs_sysroot", emptyDir), msg: "no trusted keys: " + emptyDir + "/cfs/trusted.d is not a directory"},
		{name: "no trusted key", vars: with("cfs_sysroot", enrolled.dir, "cfs_trusted_dir", noKeys), msg: "no trusted keys: no *.pub in " + noKeys},
		{name: "missing revoked dir", vars: with("cfs_sysroot", enrolled.dir, "cfs_revoked_dir", emptyDir+"/none"), msg: "is not a directory"},
		{name: "missing config", vars: with("cfs_sysroot", enrolled.dir, "cfs_initramfs_conf", emptyDir+"/none.conf"), msg: "none.conf not found"},
		{name: "tpm required by default, not enrolled", vars: with("cfs_sysroot", plain.dir, "cfs_initramfs_conf", confDefaultTPM),
			msg: "tpm = required (in " + confDefaultTPM + ") but there is no TPM enrollment"},
		{name: "missing enrollment", vars: with("cfs_sysroot", enrolled.dir, "cfs_tpm_enrollment", emptyDir+"/enrollment.json"),
			msg: "cfs_tpm_enrollment=" + emptyDir + "/enrollment.json not found"},
		{name: "tpm required by the sysroot, enrollment lost", vars: with("cfs_sysroot", lost.dir),
			msg: "tpm = required (in the configuration derived from " + lost.dir + ") but there is no TPM enrollment", derived: true},
		{name: "bad tpm mode", vars: with("cfs_sysroot", enrolled.dir, "cfs_initramfs_conf", confBadTPM), msg: "tpm = maybe: want required, if-present or off"},
	} {
		t.Run("refuses/"+tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.derived && hostConf == nil {
				t.Skipf("the host has %s, which the module takes instead of deriving one", initramfs.DefaultConfigFile)
			}
			img, out, err := it.dracut(t.Context(), t, tc.vars, "--no-kernel", "-m", "cfs")
			if err == nil {
				t.Fatalf("dracut succeeded:\n%s", out)
			}
			if !strings.Contains(out, "cfs: ") || !strings.Contains(out, tc.msg) {
				t.Errorf("dracut output does not say %q:\n%s", tc.msg, out)
			}
			if _, err := os.Stat(img); err == nil {
				t.Errorf("dracut failed but wrote %s", img)
			}
		})
	}
}

var kernelModules = []string{"erofs", "overlay", "loop", "tpm_tis", "tpm_crb"}

// fakeKernel makes a module tree for a made-up kernel version whose
// erofs, overlay, loop, tpm_tis and tpm_crb are loadable modules (ELF
// objects with a .modinfo, enough for depmod and dracut-install), and
// returns the version and the tree.
func fakeKernel(t *testing.T) (kver, kmoddir string) {
	t.Helper()
	cc := testutil.RequireTool(t, "cc")
	depmod := testutil.RequireTool(t, "depmod")
	root := t.TempDir()
	kver = "0.0.1-cfs-test"
	kmoddir = filepath.Join(root, "lib/modules", kver)
	paths := map[string]string{
		"erofs": "kernel/fs/erofs", "overlay": "kernel/fs/overlayfs", "loop": "kernel/drivers/block",
		"tpm_tis": "kernel/drivers/char/tpm", "tpm_crb": "kernel/drivers/char/tpm",
	}
	src := t.TempDir()
	for _, m := range kernelModules {
		c := filepath.Join(src, m+".c")
		var b strings.Builder
		for i, info := range []string{"license=GPL", "name=" + m, "vermagic=" + kver + " SMP mod_unload ", "depends="} {
			fmt.Fprintf(&b, "__attribute__((section(\".modinfo\"), used, aligned(1))) static const char info%d[] = %q;\n", i, info)
		}
		b.WriteString("__attribute__((section(\".gnu.linkonce.this_module\"), used)) static char this_module[1024];\n")
		writeFile(t, c, b.String(), 0o644)
		ko := filepath.Join(kmoddir, paths[m], m+".ko")
		if err := os.MkdirAll(filepath.Dir(ko), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(t.Context(), cc, "-c", "-o", ko, c).CombinedOutput(); err != nil {
			t.Fatalf("cc: %v\n%s", err, out)
		}
	}
	writeFile(t, filepath.Join(kmoddir, "modules.order"), "", 0o644)
	writeFile(t, filepath.Join(kmoddir, "modules.builtin"), "", 0o644)
	if out, err := exec.CommandContext(t.Context(), depmod, "-b", root, kver).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v\n%s", err, out)
	}
	return kver, kmoddir
}

func uname(t *testing.T) string {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// hostKernel returns the version of an installed kernel with a module
// tree, or "".
func hostKernel() string {
	dirs, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(dirs) == 0 {
		return ""
	}
	return filepath.Base(filepath.Dir(dirs[0]))
}

// checkKernel builds an initramfs for kver (kmoddir: its module tree, ""
// for /lib/modules/kver) and checks that erofs, overlay and loop are in it
// or built into the kernel, as are the TPM drivers the kernel has.
func checkKernel(t *testing.T, it installTree, vars map[string]string, kver, kmoddir string) {
	t.Helper()
	args := []string{"--kver", kver, "-m", "cfs"}
	if kmoddir != "" {
		args = append(args, "--kmoddir", kmoddir)
	} else {
		kmoddir = filepath.Join("/lib/modules", kver)
	}
	img, out, err := it.dracut(t.Context(), t, vars, args...)
	if err != nil {
		t.Fatalf("dracut --kver %s: %v\n%s", kver, err, out)
	}
	l := lsinitrd(t, img)
	builtin, _ := os.ReadFile(filepath.Join(kmoddir, "modules.builtin"))
	dep, _ := os.ReadFile(filepath.Join(kmoddir, "modules.dep"))
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	named := func(text []byte, m string) bool {
		for line := range strings.Lines(string(text)) {
			path, _, _ := strings.Cut(strings.TrimSpace(line), ":")
			base := filepath.Base(path)
			if i := strings.Index(base, ".ko"); i > 0 && norm(base[:i]) == m {
				return true
			}
		}
		return false
	}
	for _, m := range kernelModules {
		inImage := false
		for p := range l.paths {
			if strings.Contains(p, "/modules/"+kver+"/") {
				base := filepath.Base(p)
				if i := strings.Index(base, ".ko"); i > 0 && norm(base[:i]) == m {
					inImage = true
				}
			}
		}
		switch {
		case inImage:
		case named(builtin, m):
			t.Logf("kernel %s: %s is built in", kver, m)
		case strings.HasPrefix(m, "tpm_") && !named(dep, m):
			t.Logf("kernel %s has no %s", kver, m)
		default:
			t.Errorf("initramfs for kernel %s lacks the module %s", kver, m)
		}
	}
}
