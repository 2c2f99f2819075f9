package tpm

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// swtpmInstance is a software TPM on loopback owned by one test, with the
// test's own connection to it.
type swtpmInstance struct {
	*testutil.SWTPM
	port  int
	state string
	conn  transport.TPMCloser
}

// startSWTPM starts an swtpm with its own state directory, started
// (not-need-init, startup-clear); it is killed at cleanup.
func startSWTPM(t *testing.T) *swtpmInstance {
	t.Helper()
	return startSWTPMFlags(t, t.TempDir(), true)
}

// startSWTPMFlags starts an swtpm on state; with started=false it needs
// the power-on dance (CMD_INIT + TPM2_Startup) before use.
func startSWTPMFlags(t *testing.T, state string, started bool) *swtpmInstance {
	t.Helper()
	sw := testutil.StartSWTPM(t, state, started)
	inst := &swtpmInstance{SWTPM: sw, port: sw.Port, state: sw.State}
	t.Cleanup(inst.disconnect) // runs before the process is killed
	return inst
}

func (s *swtpmInstance) uri() string { return s.URI() }

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
	s.disconnect()
	return s.Tool(t, name, args...)
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
