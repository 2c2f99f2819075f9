package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SWTPM is a software TPM (swtpm) on loopback owned by one test: its own
// state directory and a free command/control port pair. It is killed at
// the test's cleanup.
type SWTPM struct {
	Port  int    // command port; the control port is Port+1
	State string // state directory
}

// URI is the cfs --tpm spelling of this TPM.
func (s *SWTPM) URI() string { return fmt.Sprintf("swtpm:127.0.0.1:%d", s.Port) }

// swtpmStartMu serialises port selection and swtpm start-up within a test
// binary, so that parallel tests never pick the same free port pair
// between probing it and swtpm binding it.
var swtpmStartMu sync.Mutex

// StartSWTPM starts swtpm on state (a new temporary directory if empty).
// With started, it runs with not-need-init,startup-clear; otherwise the
// caller does the power-on (CMD_INIT on the control port, TPM2_Startup).
// It skips (fails under CI) when swtpm is not installed.
func StartSWTPM(t testing.TB, state string, started bool) *SWTPM {
	t.Helper()
	bin := RequireTool(t, "swtpm")
	if state == "" {
		state = t.TempDir()
	}
	swtpmStartMu.Lock()
	defer swtpmStartMu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		port, err := FreePortPair()
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
		if err := WaitListening(port, exited); err != nil {
			lastErr = fmt.Errorf("%v: %s", err, stderr.String())
			_ = cmd.Process.Kill()
			continue // port taken meanwhile: try another pair
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return &SWTPM{Port: port, State: state}
	}
	t.Fatalf("swtpm did not start: %v", lastErr)
	return nil
}

// Tool runs a tpm2-tools command against this swtpm and returns its
// stdout. swtpm serves one client at a time: close other connections first.
func (s *SWTPM) Tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	bin := RequireTool(t, name)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", s.Port))
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

// FreePortPair returns a port P such that P and P+1 are free on 127.0.0.1
// (a moment ago).
func FreePortPair() (int, error) {
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

// WaitListening polls until both the control and the command port accept
// connections, or the process exits (it does when a port is taken).
func WaitListening(port int, exited <-chan error) error {
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
