// Command guestinit is the init program (PID 1) of the guest OS the VM tests
// (tests/vm) boot. It reports what was booted over the serial console in
// lines starting with "CFS-GUEST " and powers the machine off. It never
// exits: PID 1 exiting panics the kernel.
//
// It runs in one of two roles:
//
//   - /sbin/init of the deployed OS (after the cfs initrd switched root):
//     reports the booted record (/run/cfs/booted.json), the root mount, the
//     TPM (PCRs 7 and 15), reads the files listed in /usr/lib/cfsvm/read
//     (EIO shows fs-verity refusing a tampered object), then either
//     completes the boot (systemd-bless-boot and cfs-initramfs bless) or, if
//     /usr/lib/cfsvm/mode says "fail", powers off before boot-complete, as a
//     deployment whose boot never completes.
//   - /init of the harness's provisioning initramfs (kernel argument
//     cfsvm.provision=1): enables fs-verity on every object and deployed
//     image of the sysroots on the disks cfsvm.disks= lists (the host's
//     kernel has no fs-verity) and re-seals the deployments of the one
//     cfsvm.reseal= names to this machine's PCR 7, with the cfs-deploy
//     binary next to it.
//
// Build it static: CGO_ENABLED=0 go build ./tests/vm/guestinit.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts every line the harness parses.
const Prefix = "CFS-GUEST"

// console is where reports go: the kernel console (the serial port).
var console io.Writer = os.Stdout

func report(format string, args ...any) {
	fmt.Fprintf(console, Prefix+" "+format+"\n", args...)
}

func main() {
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		console = c
	}
	defer powerOff()
	defer func() {
		if r := recover(); r != nil {
			report("panic %v", r)
		}
	}()
	mountBasics()
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		console = c // devtmpfs may only now be there (provisioning initramfs)
	}
	cmdline := readCmdline()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	report("start pid=%d kernel=%s role=%s", os.Getpid(), unix.ByteSliceToString(uts.Release[:]), role(cmdline))
	if cmdline["cfsvm.provision"] == "1" {
		provision(cmdline)
		return
	}
	guest(cmdline)
}

func role(cmdline map[string]string) string {
	if cmdline["cfsvm.provision"] == "1" {
		return "provision"
	}
	return "guest"
}

// powerOff syncs and powers the machine off; it does not return.
func powerOff() {
	report("poweroff")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		report("error poweroff: %v", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// mountBasics mounts the API file systems that are not there yet (after a
// switch-root systemd has moved them into the new root already).
func mountBasics() {
	for _, m := range []struct{ fstype, dir string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/run"},
	} {
		_ = os.MkdirAll(m.dir, 0o755)
		if isMountPoint(m.dir) {
			continue
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, unix.MS_NOSUID, ""); err != nil {
			report("error mount %s: %v", m.dir, err)
		}
	}
}

func isMountPoint(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Join(dir, ".."), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino
}

// readCmdline parses /proc/cmdline into key → value ("" for flags); later
// arguments override earlier ones. It is reported verbatim too.
func readCmdline() map[string]string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		report("error cmdline: %v", err)
		return nil
	}
	line := strings.TrimSpace(string(b))
	report("cmdline %s", line)
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = strings.Trim(v, `"`)
	}
	return m
}

// guest is the deployed OS's init.
func guest(cmdline map[string]string) {
	reportBooted()
	reportMounts()
	reportTPM()
	for _, p := range readList() {
		reportRead(p)
	}
	mode := "good"
	if b, err := os.ReadFile("/usr/lib/cfsvm/mode"); err == nil {
		mode = strings.TrimSpace(string(b))
	}
	if m, ok := cmdline["cfsvm.mode"]; ok {
		mode = m
	}
	report("mode %s", mode)
	if mode == "fail" {
		report("not-completing: powering off before boot-complete")
		return
	}
	blessBootEntry()
	blessTPM()
	report("boot-complete")
}

// reportBooted prints the record the cfs initrd left, raw and as fields.
func reportBooted() {
	b, err := os.ReadFile("/run/cfs/booted.json")
	if err != nil {
		report("booted-json missing: %v", err)
		return
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		report("booted-json invalid: %v", err)
		return
	}
	report("booted-json %s", compact.String())
	var rec map[string]any
	_ = json.Unmarshal(b, &rec)
	field := func(keys ...string) string {
		for _, k := range keys {
			if s, ok := rec[k].(string); ok {
				return s
			}
		}
		return ""
	}
	report("booted commit=%s digest=%s deployment=%s",
		field("commit"), field("image-digest", "digest", "composefs"), field("deployment"))
}

// reportMounts prints the mounts of /, /etc and /var from mountinfo:
// file system type, source and both option sets (verity=require shows in
// the overlay's super options).
func reportMounts() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		report("error mountinfo: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 3 {
			continue
		}
		switch a[4] {
		case "/", "/etc", "/var":
			report("mount point=%s fstype=%s source=%s opts=%s superopts=%s", a[4], b[0], b[1], a[5], b[2])
		}
	}
}

// reportTPM prints whether the TPM resource manager device exists and the
// SHA-256 values of PCRs 7 and 15 from sysfs.
func reportTPM() {
	dev := "absent"
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		dev = "present"
	}
	pcr := func(n int) string {
		b, err := os.ReadFile(fmt.Sprintf("/sys/class/tpm/tpm0/pcr-sha256/%d", n))
		if err != nil {
			return "none"
		}
		return strings.ToLower(strings.TrimSpace(string(b)))
	}
	report("tpm dev=%s pcr7=%s pcr15=%s", dev, pcr(7), pcr(15))
}

// readList returns the files the tree asks to read (/usr/lib/cfsvm/read,
// one absolute path a line).
func readList() []string {
	b, err := os.ReadFile("/usr/lib/cfsvm/read")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "/") {
			out = append(out, l)
		}
	}
	return out
}

// reportRead reads path to the end and prints its SHA-256 or the errno.
func reportRead(path string) {
	f, err := os.Open(path)
	if err == nil {
		h := sha256.New()
		var n int64
		n, err = io.Copy(h, f)
		f.Close()
		if err == nil {
			report("read path=%s result=ok bytes=%d sha256=%s", path, n, hex.EncodeToString(h.Sum(nil)))
			return
		}
	}
	var errno unix.Errno
	name := "other"
	if errors.As(err, &errno) {
		name = unix.ErrnoName(errno)
	}
	report("read path=%s result=error errno=%s err=%q", path, name, err.Error())
}

// blessBootEntry does what systemd-bless-boot.service does after
// boot-complete.target: when the boot loader reported boot counting
// (LoaderBootCountPath), mark the booted entry good on the ESP.
func blessBootEntry() {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		report("bless-boot skipped: not booted by UEFI")
		return
	}
	modprobe("efivarfs")
	const efivars = "/sys/firmware/efi/efivars"
	if !isMountPoint(efivars) {
		if err := unix.Mount("efivarfs", efivars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			report("error bless-boot: mount efivarfs: %v", err)
			return
		}
	}
	path, err := efiString(efivars + "/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")
	if err != nil {
		report("bless-boot skipped: no LoaderBootCountPath (%v)", err)
		return
	}
	report("bless-boot loader-boot-count-path=%s", path)
	esp := findESP()
	if esp == "" {
		report("error bless-boot: no ESP found among the virtio disks")
		return
	}
	for _, m := range []string{"vfat", "nls_cp437", "nls_ascii"} {
		modprobe(m)
	}
	_ = os.MkdirAll("/efi", 0o755)
	if err := unix.Mount(esp, "/efi", "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=0077"); err != nil {
		report("error bless-boot: mount %s on /efi: %v", esp, err)
		return
	}
	defer func() {
		unix.Sync()
		if err := unix.Unmount("/efi", 0); err != nil {
			report("error bless-boot: unmount /efi: %v", err)
		}
	}()
	for _, args := range [][]string{{"good"}, {"status"}} {
		cmd := exec.Command("/usr/lib/systemd/systemd-bless-boot", args...)
		// The ESP here is a whole virtio disk, not a GPT partition.
		cmd.Env = append(os.Environ(), "SYSTEMD_RELAX_ESP_CHECKS=1", "SYSTEMD_ESP_PATH=/efi")
		out, err := cmd.CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			report("bless-boot %s: %s", args[0], l)
		}
		report("bless-boot %s exit=%v", args[0], exitCode(err))
	}
}

// blessTPM runs cfs-initramfs bless (cfs-bless.service's job): raise the
// TPM anti-rollback counter to the booted commit's rollback index.
func blessTPM() {
	const bin = "/usr/bin/cfs-initramfs"
	if _, err := os.Stat(bin); err != nil {
		report("bless-tpm skipped: %s not in the tree", bin)
		return
	}
	if _, err := os.Stat("/run/cfs/booted.json"); err != nil {
		report("bless-tpm skipped: no booted record")
		return
	}
	out, err := exec.Command(bin, "bless").CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		report("bless-tpm: %s", l)
	}
	report("bless-tpm exit=%v", exitCode(err))
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		return -1
	}
}

// efiString reads an EFI variable holding a NUL-terminated UTF-16LE string.
func efiString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(b) < 4 {
		return "", fmt.Errorf("%s: %d bytes", path, len(b))
	}
	b = b[4:] // attributes
	var r []rune
	for i := 0; i+1 < len(b); i += 2 {
		c := rune(b[i]) | rune(b[i+1])<<8
		if c == 0 {
			break
		}
		r = append(r, c)
	}
	return string(r), nil
}

// findESP returns the first virtio disk holding a FAT32 file system.
func findESP() string {
	disks, _ := filepath.Glob("/dev/vd[a-z]")
	for _, d := range disks {
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		buf := make([]byte, 90)
		_, err = io.ReadFull(f, buf)
		f.Close()
		if err == nil && string(buf[82:90]) == "FAT32   " {
			return d
		}
	}
	return ""
}

// modprobe loads a module and its dependencies (modules.dep of the running
// kernel) with finit_module; already loaded or built-in is fine.
func modprobe(name string) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	dir := "/lib/modules/" + unix.ByteSliceToString(uts.Release[:])
	deps, err := readModulesDep(dir + "/modules.dep")
	if err != nil {
		report("error modprobe %s: %v", name, err)
		return
	}
	seen := map[string]bool{}
	var load func(string) error
	load = func(mod string) error {
		if seen[mod] {
			return nil
		}
		seen[mod] = true
		e, ok := deps[mod]
		if !ok {
			return nil // built in, or not there: the caller finds out when using it
		}
		for i := len(e.deps) - 1; i >= 0; i-- {
			if err := load(modName(e.deps[i])); err != nil {
				return err
			}
		}
		f, err := os.Open(filepath.Join(dir, e.path))
		if err != nil {
			return err
		}
		defer f.Close()
		flags := 0
		if !strings.HasSuffix(e.path, ".ko") {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		err = unix.FinitModule(int(f.Fd()), "", flags)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s: %w", e.path, err)
		}
		return nil
	}
	if err := load(modName(name)); err != nil {
		report("error modprobe %s: %v", name, err)
	}
}

type modEntry struct {
	path string
	deps []string
}

func readModulesDep(path string) (map[string]modEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]modEntry{}
	for _, l := range strings.Split(string(b), "\n") {
		p, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		m[modName(p)] = modEntry{path: p, deps: strings.Fields(rest)}
	}
	return m, nil
}

// modName turns "kernel/fs/fat/vfat.ko.xz" or "nls-cp437" into "vfat",
// "nls_cp437".
func modName(s string) string {
	s = filepath.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// provision prepares sysroot disks built on the host for booting: fs-verity
// on every object and deployed image (verity=require needs it; the host's
// kernel cannot enable it), then, for the disk named by cfsvm.reseal=,
// re-seals the deployments' TPM blobs to this machine's PCRs.
// cfsvm.disks= lists the disks (default /dev/vda).
func provision(cmdline map[string]string) {
	modprobe("virtio_blk")
	disks := strings.Split(cmdline["cfsvm.disks"], ",")
	if cmdline["cfsvm.disks"] == "" {
		disks = []string{"/dev/vda"}
	}
	reportTPM()
	// The disks in parallel: hashing in the kernel is the work, and the
	// guest has two CPUs.
	errs := make([]error, len(disks))
	var wg sync.WaitGroup
	for i, disk := range disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = provisionDisk(disk, fmt.Sprintf("/mnt/%d", i), disk == cmdline["cfsvm.reseal"])
		}()
	}
	wg.Wait()
	failed := false
	for i, err := range errs {
		if err != nil {
			report("error provision %s: %v", disks[i], err)
			failed = true
		}
	}
	if !failed {
		report("provisioned")
	}
}

func provisionDisk(disk, mnt string, reseal bool) (err error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(disk); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never appeared", disk)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(disk, mnt, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer func() {
		unix.Sync()
		if uerr := unix.Unmount(mnt, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmount: %w", uerr)
		}
	}()
	// fs-verity on every object and deployed image, by cfs-deploy itself
	// (which checks every kernel measurement against the object's name and
	// the signed image digest).
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	out, err := exec.CommandContext(ctx, "/bin/cfs-deploy", "--sysroot", mnt, "verity", "--json").CombinedOutput()
	cancel()
	if err != nil {
		return fmt.Errorf("cfs-deploy verity: %v: %s", err, out)
	}
	var res struct {
		Objects        int `json:"objects"`
		ObjectsEnabled int `json:"objects-enabled"`
		Images         int `json:"images"`
		ImagesEnabled  int `json:"images-enabled"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("cfs-deploy verity --json: %v: %s", err, out)
	}
	report("verity-enabled disk=%s objects=%d images=%d newly-enabled=%d seconds=%.1f", disk, res.Objects, res.Images,
		res.ObjectsEnabled+res.ImagesEnabled, time.Since(start).Seconds())
	if !reseal {
		return nil
	}
	for _, args := range [][]string{{"tpm", "reseal"}, {"tpm", "status", "--json"}} {
		all := append([]string{"--sysroot", mnt, "--tpm", "device:/dev/tpmrm0"}, args...)
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		out, err := exec.CommandContext(ctx, "/bin/cfs-deploy", all...).CombinedOutput()
		cancel()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			report("cfs-deploy %s: %s", args[1], l)
		}
		report("cfs-deploy %s exit=%d", args[1], exitCode(err))
	}
	return nil
}
