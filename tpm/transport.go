package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// DefaultDevice is the TPM used when Open is given an empty URI: the kernel's
// resource-managed character device, as systemd uses it.
const DefaultDevice = "device:/dev/tpmrm0"

// Maximum size of a TPM response accepted from a stream transport. TPM
// responses are bounded by the TPM's MAX_RESPONSE_SIZE (4 KiB on common
// parts); anything near this limit is a broken peer.
const maxResponseSize = 1 << 16

// dialTimeout bounds connecting to an emulator, and commandTimeout one
// command round trip on it: guards against hanging forever on a dead or
// wedged peer, far above what any TPM command takes.
const (
	dialTimeout    = 10 * time.Second
	commandTimeout = 2 * time.Minute
)

// Open connects to a TPM named by uri:
//
//	""                    the default device, /dev/tpmrm0
//	device:PATH or PATH   a character device (/dev/tpmrm0, /dev/tpm0), a Unix
//	                      socket speaking raw TPM commands, or another file
//	swtpm:HOST:PORT       an swtpm started with --server type=tcp,port=PORT and
//	                      --ctrl type=tcp,port=PORT+1; Open powers it on
//	                      (CMD_INIT on the control port) and sends
//	                      TPM2_Startup(CLEAR) if it was not yet started
//
// A device that does not exist gives an error matching ErrNoTPM.
func Open(uri string) (transport.TPMCloser, error) {
	if uri == "" {
		uri = DefaultDevice
	}
	switch {
	case strings.HasPrefix(uri, "swtpm:"):
		return openSWTPM(strings.TrimPrefix(uri, "swtpm:"))
	case strings.HasPrefix(uri, "device:"):
		return openDevice(strings.TrimPrefix(uri, "device:"))
	case strings.HasPrefix(uri, "/"):
		return openDevice(uri)
	default:
		return nil, fmt.Errorf("tpm: unsupported TPM URI %q (want device:PATH or swtpm:HOST:PORT)", uri)
	}
}

func openDevice(path string) (transport.TPMCloser, error) {
	if path == "" {
		return nil, fmt.Errorf("tpm: empty device path")
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNoTPM, path)
		}
		return nil, fmt.Errorf("tpm: stat %s: %w", path, err)
	}
	var t transport.TPMCloser
	switch {
	case fi.Mode()&fs.ModeDevice != 0:
		t, err = linuxtpm.Open(path)
	case fi.Mode()&fs.ModeSocket != 0:
		t, err = linuxudstpm.Open(path)
	default:
		var f *os.File
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if err == nil {
			t = transport.FromReadWriteCloser(f)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	return t, nil
}

// swtpm control-channel commands (swtpm's tpm_ioctl.h; over a socket each
// request is a big-endian uint32 command code followed by its payload, and
// each response starts with a big-endian uint32 result).
const (
	swtpmCmdInit = 2
)

// swtpmConn is a TPM on swtpm's raw TCP command port. Commands and
// responses are plain TPM byte streams; the response length is taken from
// its header and read fully (a response may arrive in several segments,
// which a single Read would truncate).
type swtpmConn struct {
	mu   sync.Mutex
	conn net.Conn
	ctrl string // control port address, for power-on
}

// Send implements transport.TPM.
func (s *swtpmConn) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, fmt.Errorf("tpm: swtpm: %w", err)
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpm: swtpm write: %w", err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("tpm: swtpm read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxResponseSize {
		return nil, fmt.Errorf("tpm: swtpm response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("tpm: swtpm read response: %w", err)
	}
	return rsp, nil
}

// Close implements transport.TPMCloser.
func (s *swtpmConn) Close() error { return s.conn.Close() }

func openSWTPM(hostport string) (transport.TPMCloser, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("tpm: swtpm address %q: %w", hostport, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || port == 65535 {
		return nil, fmt.Errorf("tpm: swtpm port %q invalid (the control port is PORT+1)", portStr)
	}
	ctrl := net.JoinHostPort(host, strconv.FormatUint(port+1, 10))
	conn, err := net.DialTimeout("tcp", hostport, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: swtpm at %s: %v", ErrNoTPM, hostport, err)
	}
	s := &swtpmConn{conn: conn, ctrl: ctrl}
	if err := s.startup(); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// startup makes sure the emulator is powered on and started: TPM2_Startup
// succeeds or reports TPM_RC_INITIALIZE (already started); an emulator not
// yet powered on fails the command, and is then powered on through the
// control port and started.
func (s *swtpmConn) startup() error {
	startErr := sendStartup(s)
	if startErr == nil {
		return nil
	}
	if err := swtpmPowerOn(s.ctrl); err != nil {
		return fmt.Errorf("tpm: swtpm TPM2_Startup failed (%v) and power-on failed: %w", startErr, err)
	}
	// An emulator that was not powered on may have dropped the command
	// connection: dial it again.
	conn, err := net.DialTimeout("tcp", s.conn.RemoteAddr().String(), dialTimeout)
	if err != nil {
		return fmt.Errorf("%w: swtpm reconnect after power-on: %v", ErrNoTPM, err)
	}
	s.conn.Close()
	s.conn = conn
	if err := sendStartup(s); err != nil {
		return fmt.Errorf("tpm: swtpm TPM2_Startup after power-on: %w", err)
	}
	return nil
}

func sendStartup(t transport.TPM) error {
	_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(t)
	if err == nil || errors.Is(err, tpm2.TPMRCInitialize) {
		return nil
	}
	return err
}

// swtpmPowerOn sends CMD_INIT to swtpm's control port, which powers the
// emulated TPM on (or resets it: PCRs return to their initial values, as on
// a reboot).
func swtpmPowerOn(ctrl string) error {
	c, err := net.DialTimeout("tcp", ctrl, dialTimeout)
	if err != nil {
		return fmt.Errorf("connect to control port %s: %w", ctrl, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return err
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], swtpmCmdInit)
	binary.BigEndian.PutUint32(req[4:8], 0) // init flags: keep volatile state file
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("send CMD_INIT: %w", err)
	}
	var res [4]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return fmt.Errorf("read CMD_INIT result: %w", err)
	}
	if rc := binary.BigEndian.Uint32(res[:]); rc != 0 {
		return fmt.Errorf("CMD_INIT failed with TPM result 0x%x", rc)
	}
	return nil
}
