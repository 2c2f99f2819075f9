//go:build vm

package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// Firmware images of the ovmf package.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// machine describes one boot of a QEMU guest (software emulation: KVM is
// unusable on this machine kind, so always -accel tcg).
type machine struct {
	name string // names the serial log file
	// Direct kernel boot (SeaBIOS, or OVMF when vars is set).
	kernel, initrd, append string
	disks                  []string // raw images, virtio, in order (vda, vdb, ...)
	// tpmState is the swtpm state directory of the machine's vTPM; "" boots
	// without a TPM.
	tpmState string
	// vars is this machine's copy of an OVMF variable store: boot UEFI
	// (q35, OVMF_CODE_4M read-only pflash) instead of SeaBIOS.
	vars string
	// stopOn ends the boot (qemu is killed) when the serial log matches,
	// e.g. the emergency shell; a guest that powers off ends it by itself.
	stopOn  *regexp.Regexp
	timeout time.Duration
}

// bootResult is what a boot left.
type bootResult struct {
	log      string // the serial console
	logPath  string
	elapsed  time.Duration
	exited   bool // qemu exited by itself (guest power-off)
	exitErr  error
	stopped  bool // stopOn matched
	timedOut bool
}

// guestLines returns the lines of the guest init ("CFS-GUEST " stripped).
func (r *bootResult) guestLines() []string {
	var out []string
	for _, l := range strings.Split(r.log, "\n") {
		l = strings.TrimRight(l, "\r")
		if i := strings.Index(l, guestPrefix); i >= 0 {
			out = append(out, l[i+len(guestPrefix):])
		}
	}
	return out
}

// guestLine returns the first guest line starting with prefix, and
// whether there was one.
func (r *bootResult) guestLine(prefix string) (string, bool) {
	for _, l := range r.guestLines() {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

const guestPrefix = "CFS-GUEST "

// fields parses "k=v k2=v2 ..." (values without spaces; a quoted value is
// taken verbatim up to the closing quote).
func fields(s string) map[string]string {
	m := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		if i := strings.LastIndexByte(k, ' '); i >= 0 {
			k = k[i+1:]
		}
		if strings.HasPrefix(rest, `"`) {
			if v, err := strconv.QuotedPrefix(rest); err == nil {
				m[k], _ = strconv.Unquote(v)
				s = rest[len(v):]
				continue
			}
		}
		v, after, _ := strings.Cut(rest, " ")
		m[k] = v
		s = after
	}
	return m
}

var logSeq struct {
	sync.Mutex
	n int
}

// boot runs the machine to its end: the guest powers off, stopOn matches
// (or a kernel panic), or the timeout passes. Every process it starts
// (qemu, swtpm) is killed and reaped before it returns.
//
// A kernel panic before the kernel ran init cannot come from cfs (nothing
// of it has run; the disks and the TPM are untouched): under TCG the 6.12
// kernel very rarely dies in early init (seen: an int3 Oops in
// sched_clock_tick during bpf_global_ma_init). Such a boot is retried, at
// most twice, and the retry is logged.
func boot(t *testing.T, m machine) *bootResult {
	t.Helper()
	for attempt := 1; ; attempt++ {
		res := bootOnce(t, m)
		if attempt < 3 && earlyPanic(res.log) {
			t.Logf("boot %s: kernel panic before init ran (emulation fault, not cfs; log %s): retrying", m.name, res.logPath)
			continue
		}
		return res
	}
}

// earlyPanic reports a kernel panic before the kernel started init.
func earlyPanic(log string) bool {
	if !panicRE.MatchString(log) {
		return false
	}
	for _, started := range []string{"Freeing unused kernel image", "Run /init as init process", "Run /sbin/init", guestPrefix} {
		if strings.Contains(log, started) {
			return false
		}
	}
	return true
}

var panicRE = regexp.MustCompile(`Kernel panic`)

// midLineKmsg is a kernel message the serial console printed in the
// middle of another line (a process's output, or a journal line), up to
// and including its own newline.
var midLineKmsg = regexp.MustCompile(`([^\n])\[ *\d+\.\d+\] [^\n]*\n`)

// untangle removes kernel messages printed in the middle of other lines,
// so that the interrupted line reads whole again: the console had written
// `digest=c5106b30…486[   20.367413] fs-verity: sha256 using …` and the
// rest of the digest on the next line. The serial log file keeps the raw
// output.
func untangle(log string) string {
	return midLineKmsg.ReplaceAllString(log, "$1")
}

func bootOnce(t *testing.T, m machine) *bootResult {
	t.Helper()
	if m.timeout == 0 {
		m.timeout = 4 * time.Minute
	}
	logSeq.Lock()
	logSeq.n++
	seq := logSeq.n
	logSeq.Unlock()
	logDir := filepath.Join(workDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	res := &bootResult{logPath: filepath.Join(logDir, fmt.Sprintf("%02d-%s.log", seq, m.name))}

	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()

	args := []string{"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-display", "none", "-vga", "none", "-monitor", "none", "-parallel", "none",
		"-serial", "stdio", "-no-reboot", "-nodefaults"}
	tpmDevice := "tpm-tis"
	if m.vars != "" {
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+m.vars)
		tpmDevice = "tpm-crb"
	} else {
		args = append(args, "-machine", "pc")
	}
	if m.kernel != "" {
		args = append(args, "-kernel", m.kernel, "-append", m.append)
		if m.initrd != "" {
			args = append(args, "-initrd", m.initrd)
		}
	}
	for _, d := range m.disks {
		args = append(args, "-drive", "file="+d+",if=virtio,format=raw")
	}
	if m.tpmState != "" {
		sock, stop := startVTPM(t, m.tpmState)
		defer stop() // after qemu is reaped (defers run last-in first-out)
		args = append(args, "-chardev", "socket,id=chrtpm,path="+sock,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", tpmDevice+",tpmdev=tpm0")
	}

	logFile, err := os.Create(res.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "# qemu-system-x86_64 %s\n", strings.Join(args, " "))

	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	reaped := make(chan struct{})
	defer close(reaped) // boot kills (if needed) and reaps qemu before returning
	killAtCleanup(t, "qemu", cmd.Process.Pid, reaped)

	matched := make(chan struct{})
	copied := make(chan struct{})
	var buf bytes.Buffer
	var bufMu sync.Mutex
	go func() {
		defer close(copied)
		chunk := make([]byte, 32<<10)
		once := sync.Once{}
		for {
			n, err := out.Read(chunk)
			if n > 0 {
				logFile.Write(chunk[:n])
				bufMu.Lock()
				buf.Write(chunk[:n])
				hit := (m.stopOn != nil && m.stopOn.Match(buf.Bytes())) || panicRE.Match(buf.Bytes())
				bufMu.Unlock()
				if hit {
					once.Do(func() { close(matched) })
				}
			}
			if err != nil {
				return
			}
		}
	}()
	waited := make(chan error, 1)
	go func() {
		<-copied
		waited <- cmd.Wait()
	}()
	select {
	case err := <-waited:
		res.exited, res.exitErr = true, err
	case <-matched:
		res.stopped = true
		// Let the console flush the lines after the marker.
		select {
		case err := <-waited:
			res.exited, res.exitErr = true, err
		case <-time.After(3 * time.Second):
		}
	case <-ctx.Done():
		res.timedOut = true
	}
	res.elapsed = time.Since(start)
	if !res.exited {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	}
	bufMu.Lock()
	res.log = untangle(buf.String())
	bufMu.Unlock()
	if stderr.Len() > 0 {
		fmt.Fprintf(logFile, "\n# qemu stderr:\n%s", stderr.String())
	}
	t.Logf("boot %s: %.1fs exited=%v stopped=%v timedOut=%v, serial log %s",
		m.name, res.elapsed.Seconds(), res.exited, res.stopped, res.timedOut, res.logPath)
	if res.exited && res.exitErr != nil {
		t.Logf("qemu: %v\n%s", res.exitErr, stderr.String())
	}
	return res
}

// startVTPM starts swtpm for QEMU on state (control over a Unix socket,
// --terminate: it exits when QEMU's connection ends) and returns the
// socket and a function that waits for swtpm to end (killing it after a
// grace period), so that the next boot on the same state finds it free.
func startVTPM(t *testing.T, state string) (string, func()) {
	t.Helper()
	sock := filepath.Join(state, "swtpm.sock")
	os.Remove(sock)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+sock, "--terminate",
		"--log", "file="+filepath.Join(state, "swtpm.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	killAtCleanup(t, "swtpm", cmd.Process.Pid, done)
	stop := func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Not probed with a connection: with --terminate swtpm would end
		// when the probe disconnects.
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			return sock, stop
		}
		select {
		case <-done:
			t.Fatalf("swtpm exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("swtpm socket %s never appeared: %s", sock, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killAtCleanup kills a process the test started (SIGKILL to its process
// group) at the end of the test unless it has ended (done closed), and
// waits for it to be reaped.
func killAtCleanup(t *testing.T, what string, pid int, done <-chan struct{}) {
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", what, pid)
		}
	})
}

// leftoverProcs lists processes still running that the tests started,
// found by their parent (this test binary) as pgrep -P would.
func leftoverProcs() []string {
	out, err := exec.Command("pgrep", "-a", "-P", strconv.Itoa(os.Getpid())).Output()
	if err != nil {
		return nil // exit 1: none
	}
	var left []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, "pgrep") {
			left = append(left, l)
		}
	}
	return left
}

// tcpTPM is a swtpm on loopback TCP (for cfs-deploy --tpm swtpm:HOST:PORT
// and tpm2-tools on the host), on a state directory a vTPM later uses.
type tcpTPM struct {
	port    int
	cmd     *exec.Cmd
	done    chan error
	once    sync.Once
	stopErr error
}

func (s *tcpTPM) uri() string { return fmt.Sprintf("swtpm:127.0.0.1:%d", s.port) }
func (s *tcpTPM) tcti() string {
	return fmt.Sprintf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", s.port)
}

// startTCPTPM starts swtpm on state, powered on (startup-clear).
func startTCPTPM(state string) (*tcpTPM, error) {
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		port, err := testutil.FreePortPair()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		s := &tcpTPM{port: port, cmd: cmd, done: make(chan error, 1)}
		go func() { s.done <- cmd.Wait() }()
		if err := testutil.WaitListening(port, s.done); err != nil {
			lastErr = fmt.Errorf("%w: %s", err, stderr.String())
			_ = cmd.Process.Kill()
			<-s.done
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("swtpm did not start: %w", lastErr)
}

// stop shuts the TPM down in order (TPM2_Shutdown(CLEAR), so that the
// state a later boot starts from is clean) and ends swtpm.
func (s *tcpTPM) stop() error {
	s.once.Do(func() { s.stopErr = s.shutdown() })
	return s.stopErr
}

func (s *tcpTPM) shutdown() error {
	var err error
	if out, e := exec.Command("tpm2_shutdown", "-c", "-T", strings.TrimPrefix(s.tcti(), "TPM2TOOLS_TCTI=")).CombinedOutput(); e != nil {
		err = fmt.Errorf("tpm2_shutdown: %w: %s", e, out)
	}
	_ = exec.Command("swtpm_ioctl", "--tcp", fmt.Sprintf("127.0.0.1:%d", s.port+1), "-s").Run()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	return err
}

// copyFile copies src to dst (sparse regions stay sparse: cp --sparse).
func copyFile(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", "-a", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp %s %s: %w: %s", src, dst, err, out)
	}
	return nil
}

// copyDir copies a directory tree.
func copyDir(src, dst string) error {
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %w: %s", src, dst, err, out)
	}
	return nil
}

func TestUntangle(t *testing.T) {
	raw := "[   20.414953] cfs-initramfs[289]: msg=x digest=c5106b30348fac486[   20.367413] fs-verity: sha256 using implementation \"sha256-avx2\"\n" +
		"a791d6 rollback-index=1\n[   20.929022] erofs: mounted\n"
	want := "[   20.414953] cfs-initramfs[289]: msg=x digest=c5106b30348fac486a791d6 rollback-index=1\n[   20.929022] erofs: mounted\n"
	if got := untangle(raw); got != want {
		t.Fatalf("untangle:\n%q\nwant\n%q", got, want)
	}
}
