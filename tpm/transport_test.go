package tpm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestOpenNoTPM(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "tpmrm0")
	for _, uri := range []string{"device:" + missing, missing} {
		if _, err := Open(uri); !errors.Is(err, ErrNoTPM) {
			t.Errorf("Open(%q): want ErrNoTPM, got %v", uri, err)
		}
	}
	// This machine has no TPM: the default device is absent (or, on a
	// machine with one, opens).
	if _, err := os.Stat("/dev/tpmrm0"); errors.Is(err, os.ErrNotExist) {
		if _, err := Open(""); !errors.Is(err, ErrNoTPM) {
			t.Errorf("Open(\"\") without /dev/tpmrm0: want ErrNoTPM, got %v", err)
		}
	}
	// Nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if _, err := Open(fmt.Sprintf("swtpm:127.0.0.1:%d", port)); !errors.Is(err, ErrNoTPM) {
		t.Errorf("Open on a closed port: want ErrNoTPM, got %v", err)
	}
	for _, bad := range []string{"tcp:1.2.3.4:5", "swtpm:nohost", "swtpm:127.0.0.1:65535", "relative/path"} {
		if _, err := Open(bad); err == nil || errors.Is(err, ErrNoTPM) {
			t.Errorf("Open(%q): want a usage error, got %v", bad, err)
		}
	}
}

// An swtpm started without not-need-init/startup-clear is powered on
// through its control port and started by Open.
func TestOpenPowersOnSWTPM(t *testing.T) {
	t.Parallel()
	inst := startSWTPMFlags(t, t.TempDir(), false)
	tp, err := Open(inst.uri())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer tp.Close()
	rsp, err := tpm2.GetRandom{BytesRequested: 4}.Execute(tp)
	if err != nil || len(rsp.RandomBytes.Buffer) != 4 {
		t.Fatalf("GetRandom after power-on: %v", err)
	}
	// Opening a started TPM again is fine (TPM_RC_INITIALIZE is success).
	tp.Close()
	tp2, err := Open(inst.uri())
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	tp2.Close()
}

func TestEnrollmentValidation(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	enr, _ := enroll(t, inst)
	js, err := enr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEnrollment(js); err != nil {
		t.Fatalf("valid enrollment refused: %v", err)
	}
	mutate := map[string]func(e *Enrollment){
		"version":          func(e *Enrollment) { e.Version = 2 },
		"srk name":         func(e *Enrollment) { e.SRKName[5] ^= 1 },
		"srk public":       func(e *Enrollment) { e.SRKPublic[len(e.SRKPublic)-1] ^= 1 },
		"policy key name":  func(e *Enrollment) { e.PolicyKeyName[3] ^= 1 },
		"policy key":       func(e *Enrollment) { e.PolicyKey = strings.Replace(e.PolicyKey, "PUBLIC KEY", "PRIVATE KEY", 2) },
		"measure pcr 11":   func(e *Enrollment) { e.MeasurePCR = 11 },
		"pcr out of range": func(e *Enrollment) { e.PCRs = []int{24} },
		"duplicate pcr":    func(e *Enrollment) { e.PCRs = []int{7, 15} },
		"no pcrs":          func(e *Enrollment) { e.PCRs = nil },
		"nv index":         func(e *Enrollment) { e.NVIndex = 0x01800000 },
		"srk handle":       func(e *Enrollment) { e.SRKHandle = 0x80000001 },
	}
	for name, f := range mutate {
		e, err := ParseEnrollment(js)
		if err != nil {
			t.Fatal(err)
		}
		f(e)
		b, _ := e.Marshal()
		if _, err := ParseEnrollment(b); !errors.Is(err, ErrEnrollment) {
			t.Errorf("%s: want ErrEnrollment, got %v", name, err)
		}
	}
	withExtra := strings.Replace(string(js), "{", "{\"extra\": 1,", 1)
	if _, err := ParseEnrollment([]byte(withExtra)); !errors.Is(err, ErrEnrollment) {
		t.Errorf("unknown field accepted: %v", err)
	}
}
