package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/internal/testutil"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// swtpmInstance is a software TPM on loopback owned by one test.
type swtpmInstance struct {
	port  int
	state string
	conn  transport.TPMCloser
}

// startSWTPM starts an swtpm with its own state directory and a free port
// pair, started (not-need-init, startup-clear); it is killed at cleanup.
func startSWTPM(t *testing.T) *swtpmInstance {
	t.Helper()
	return startSWTPMFlags(t, t.TempDir(), true)
}

// swtpmStartMu serialises port selection and swtpm start-up within this
// test binary, so that parallel tests never pick the same free port pair
// between probing it and swtpm binding it.
var swtpmStartMu sync.Mutex

// startSWTPMFlags starts an swtpm on state; with started=false it needs
// the power-on dance (CMD_INIT + TPM2_Startup) before use.
func startSWTPMFlags(t *testing.T, state string, started bool) *swtpmInstance {
	t.Helper()
	bin := testutil.RequireTool(t, "swtpm")
	swtpmStartMu.Lock()
	defer swtpmStartMu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"socket", "--tpm2",
			"--tpmstate", "dir=" + state,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		}
		if started {
			args = append(args, "--flags", "not-need-init,startup-clear")
		}
		var stderr bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start swtpm: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitListening(port, exited); err != nil {
			lastErr = fmt.Errorf("%v: %s", err, stderr.String())
			_ = cmd.Process.Kill()
			continue // port taken meanwhile: try another pair
		}
		inst := &swtpmInstance{port: port, state: state}
		t.Cleanup(func() {
			inst.disconnect()
			_ = cmd.Process.Kill()
			<-exited
		})
		return inst
	}
	t.Fatalf("swtpm did not start: %v", lastErr)
	return nil
}

func freePortPair() (int, error) {
	for i := 0; i < 100; i++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free consecutive TCP port pair on 127.0.0.1")
}

// waitListening polls until both the command and the control port accept
// connections, or the process exits (it does when a port is taken). swtpm
// binds the control port before the command port; a probe connection to
// the command port is accepted, sees EOF and is dropped.
func waitListening(port int, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []int{port + 1, port} {
		for {
			select {
			case err := <-exited:
				return fmt.Errorf("swtpm exited: %v", err)
			default:
			}
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("swtpm port %d never opened: %v", p, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	select {
	case err := <-exited:
		return fmt.Errorf("swtpm exited: %v", err)
	default:
		return nil
	}
}

func (s *swtpmInstance) uri() string { return fmt.Sprintf("swtpm:127.0.0.1:%d", s.port) }

// tpm returns the test's connection, opening it if needed.
func (s *swtpmInstance) tpm(t *testing.T) transport.TPM {
	t.Helper()
	if s.conn == nil {
		c, err := Open(s.uri())
		if err != nil {
			t.Fatalf("open %s: %v", s.uri(), err)
		}
		s.conn = c
	}
	return s.conn
}

func (s *swtpmInstance) disconnect() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// tool runs a tpm2-tools command against this swtpm. swtpm serves one
// client at a time, so the test's own connection is closed first.
func (s *swtpmInstance) tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, name)
	s.disconnect()
	cmd := exec.CommandContext(context.Background(), bin, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", s.port))
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

// reboot simulates a power cycle: orderly shutdown, CMD_INIT on the control
// port (PCRs return to their reset values), TPM2_Startup(CLEAR).
func (s *swtpmInstance) reboot(t *testing.T) {
	t.Helper()
	if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}).Execute(s.tpm(t)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	s.disconnect()
	if err := swtpmPowerOn(fmt.Sprintf("127.0.0.1:%d", s.port+1)); err != nil {
		t.Fatalf("power cycle: %v", err)
	}
	if err := sendStartup(s.tpm(t)); err != nil {
		t.Fatalf("startup after power cycle: %v", err)
	}
}

// assertNoHandles fails if any transient object or session is loaded.
func assertNoHandles(t *testing.T, tp transport.TPM, when string) {
	t.Helper()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(ht) << 24,
			PropertyCount: 64,
		}.Execute(tp)
		if err != nil {
			t.Fatalf("%s: get handles: %v", when, err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatalf("%s: handles: %v", when, err)
		}
		var leaked []string
		for _, h := range hs.Handle {
			switch tpm2.TPMHT(h >> 24) {
			case tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession:
				leaked = append(leaked, fmt.Sprintf("0x%08x", uint32(h)))
			}
		}
		if len(leaked) > 0 {
			t.Errorf("%s: leaked handles of type 0x%02x: %s", when, uint8(ht), strings.Join(leaked, " "))
		}
	}
}

func TestHelperStartsIsolatedInstances(t *testing.T) {
	a := startSWTPM(t)
	b := startSWTPM(t)
	if a.port == b.port || filepath.Clean(a.state) == filepath.Clean(b.state) {
		t.Fatalf("instances share port %d/%d or state %s/%s", a.port, b.port, a.state, b.state)
	}
	for _, inst := range []*swtpmInstance{a, b} {
		rsp, err := tpm2.GetRandom{BytesRequested: 8}.Execute(inst.tpm(t))
		if err != nil {
			t.Fatalf("GetRandom on %s: %v", inst.uri(), err)
		}
		if len(rsp.RandomBytes.Buffer) != 8 {
			t.Fatalf("GetRandom returned %d bytes", len(rsp.RandomBytes.Buffer))
		}
		assertNoHandles(t, inst.tpm(t), "fresh instance")
	}
}
