package initramfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/kvconf"
)

// Defaults of a real boot.
const (
	DefaultConfigFile = "/etc/cfs/initramfs.conf"
	DefaultKeysDir    = "/etc/cfs"
	DefaultSysroot    = "/sysroot"
	DefaultRunDir     = "/run"
	// PhysicalDir is where the physical root is mounted, under the run
	// directory; it stays there after switch-root (systemd moves /run).
	PhysicalDir = "cfs/physical"
)

// Files under the keys directory (the same names as under a sysroot's cfs/).
const (
	TrustedDir     = "trusted.d"
	RevokedDir     = "revoked.d"
	EnrollmentFile = "tpm/enrollment.json"
)

// Files under <run>/cfs.
const (
	RunCfsDir         = "cfs"
	BootedFile        = "booted.json"
	RunEnrollmentFile = "enrollment.json"
	// MeasureLog is systemd's TPM measurement log, under the run directory.
	MeasureLog = "log/systemd/tpm2-measure.log"
)

// ParamVerity is the kernel argument that can make the verity policy
// stricter: cfs.verity=require|objects|none.
const ParamVerity = "cfs.verity"

// Verity is how object content is verified at boot.
type Verity string

const (
	// VerityRequire: the kernel enforces fs-verity on every object
	// (overlayfs verity=require). The default.
	VerityRequire Verity = "require"
	// VerityObjects: every referenced object is hashed in user space before
	// the mount, for machines without fs-verity. Content changed on disk
	// after the boot is not detected.
	VerityObjects Verity = "objects"
	// VerityNone: objects are not verified (the image still is).
	VerityNone Verity = "none"
)

func (v Verity) rank() int {
	switch v {
	case VerityRequire:
		return 2
	case VerityObjects:
		return 1
	}
	return 0
}

// ParseVerity parses a verity policy.
func ParseVerity(s string) (Verity, error) {
	switch v := Verity(s); v {
	case VerityRequire, VerityObjects, VerityNone:
		return v, nil
	}
	return "", fmt.Errorf("verity %q: want require, objects or none", s)
}

func tpmRank(m cmdline.TPMMode) int {
	switch m {
	case cmdline.TPMRequired:
		return 2
	case cmdline.TPMIfPresent:
		return 1
	}
	return 0
}

// Config is the initramfs configuration, /etc/cfs/initramfs.conf: one
// "key = value" a line, '#' starts a comment line.
type Config struct {
	Verity Verity          // verity = require|objects|none (default require)
	TPM    cmdline.TPMMode // tpm = required|if-present|off (default required)
	// Threshold is how many distinct trusted keys must have signed the
	// commit (threshold = N, default 1).
	Threshold int
}

// DefaultConfig is the configuration when the file is absent: the kernel
// enforces fs-verity and the TPM is required.
func DefaultConfig() Config {
	return Config{Verity: VerityRequire, TPM: cmdline.TPMRequired, Threshold: 1}
}

// ParseConfig parses the configuration file's contents. Keys not given keep
// their defaults; unknown keys, repeated keys and bad values are errors (a
// boot policy must not be half understood).
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	_, err := kvconf.Parse(b, func(k, v string) error {
		var err error
		switch k {
		case "verity":
			c.Verity, err = ParseVerity(v)
		case "tpm":
			c.TPM, err = cmdline.ParseTPM(v)
		case "threshold":
			c.Threshold, err = strconv.Atoi(v)
			if err != nil || c.Threshold < 1 || c.Threshold > 64 || strconv.Itoa(c.Threshold) != v {
				err = fmt.Errorf("threshold %q: want 1-64", v)
			}
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		return err
	})
	return c, err
}

// LoadConfig reads the configuration file at path; a missing file gives
// DefaultConfig.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("initramfs config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("initramfs config %s: %w", path, err)
	}
	return c, nil
}

// Marshal encodes the configuration in the file format.
func (c Config) Marshal() []byte {
	return fmt.Appendf(nil, "# cfs initramfs configuration\nverity = %s\ntpm = %s\nthreshold = %d\n", c.Verity, c.TPM, c.Threshold)
}

// Effective returns the policy for a boot: the configuration, made stricter
// by cfs.tpm= and cfs.verity= on the kernel command line. A weaker value
// on the command line is ignored (the command line is not signed), as is a
// "?" on composefs= (which composefs-rs reads as "verity optional").
func (c Config) Effective(args []string) (Config, error) {
	out := c
	if v, ok := cmdline.Get(args, cmdline.ParamTPM); ok {
		m, err := cmdline.ParseTPM(v)
		if err != nil {
			return c, err
		}
		if tpmRank(m) > tpmRank(out.TPM) {
			out.TPM = m
		}
	}
	if v, ok := cmdline.Get(args, ParamVerity); ok {
		m, err := ParseVerity(v)
		if err != nil {
			return c, &cmdline.InvalidError{Param: ParamVerity, Value: v, Reason: "want require, objects or none"}
		}
		if m.rank() > out.Verity.rank() {
			out.Verity = m
		}
	}
	return out, nil
}
