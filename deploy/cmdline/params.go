package cmdline

import (
	"fmt"
	"path"
	"strings"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// Parameter names cfs reads and writes.
const (
	ParamComposefs  = "composefs"      // composefs=[?]<hex fs-verity digest of the image>
	ParamDeployment = "cfs.deployment" // cfs.deployment=<absolute path of the deployment>
	ParamTPM        = "cfs.tpm"        // cfs.tpm=required|if-present|off
	ParamCommit     = "cfs.commit"     // cfs.commit=<64 hex commit ID>
	ParamStateroot  = "cfs.stateroot"  // cfs.stateroot=<name>
	ParamRoot       = "root"           // root=<physical root device>
)

// Algorithm names the fs-verity hash of a composefs= digest.
type Algorithm string

const (
	SHA256 Algorithm = "sha256" // 64 hex characters (ostree, cfs)
	SHA512 Algorithm = "sha512" // 128 hex characters (composefs-rs, bootc default)
)

// Composefs is a parsed composefs= value: the fs-verity digest of the
// composefs image, as composefs-rs and bootc write it.
type Composefs struct {
	Algorithm Algorithm
	SHA256    fsverity.Digest    // set when Algorithm == SHA256
	SHA512    fsverity.Digest512 // set when Algorithm == SHA512
	// Optional is the "?" prefix: composefs-rs and bootc then mount without
	// requiring fs-verity ("insecure"). It is parsed, never acted on here:
	// callers that require verity must refuse it.
	Optional bool
}

// Hex returns the digest in lowercase hex.
func (c Composefs) Hex() string {
	if c.Algorithm == SHA512 {
		return c.SHA512.String()
	}
	return c.SHA256.String()
}

// String returns the composefs= value: the hex digest, with a leading "?"
// when Optional.
func (c Composefs) String() string {
	if c.Optional {
		return "?" + c.Hex()
	}
	return c.Hex()
}

// Arg returns the whole parameter, "composefs=<value>".
func (c Composefs) Arg() string { return ParamComposefs + "=" + c.String() }

// ParseComposefs parses a composefs= value: an optional "?" followed by 64
// (SHA-256) or 128 (SHA-512) hex characters, either case (composefs-rs
// accepts both; cfs writes lowercase).
func ParseComposefs(value string) (Composefs, error) {
	var c Composefs
	hex := value
	if strings.HasPrefix(hex, "?") {
		c.Optional = true
		hex = hex[1:]
	}
	var err error
	switch len(hex) {
	case 64:
		c.Algorithm = SHA256
		c.SHA256, err = fsverity.ParseDigest(hex)
	case 128:
		c.Algorithm = SHA512
		c.SHA512, err = fsverity.ParseDigest512(hex)
	default:
		return Composefs{}, &InvalidError{Param: ParamComposefs, Value: value,
			Reason: fmt.Sprintf("want 64 (sha256) or 128 (sha512) hex characters, optionally after '?', got %d characters", len(hex))}
	}
	if err != nil {
		return Composefs{}, &InvalidError{Param: ParamComposefs, Value: value, Reason: "not hex"}
	}
	return c, nil
}

// ParseDeployment checks a cfs.deployment= value: an absolute, clean path
// (path.Clean leaves it unchanged, so no "..", ".", "//" or trailing "/"),
// not "/" itself, without control characters.
func ParseDeployment(value string) (string, error) {
	bad := func(reason string) (string, error) {
		return "", &InvalidError{Param: ParamDeployment, Value: value, Reason: reason}
	}
	switch {
	case value == "":
		return bad("empty path")
	case !strings.HasPrefix(value, "/"):
		return bad("not an absolute path")
	case value == "/":
		return bad("the root directory is not a deployment")
	case path.Clean(value) != value:
		return bad("not a clean path (no \"..\", \".\", \"//\" or trailing \"/\")")
	case hasControl(value):
		return bad("contains control characters")
	}
	return value, nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// TPMMode is the cfs.tpm= policy of the initramfs.
type TPMMode string

const (
	TPMRequired  TPMMode = "required"   // no TPM, or a failed TPM operation, stops the boot
	TPMIfPresent TPMMode = "if-present" // use the TPM when there is one
	TPMOff       TPMMode = "off"        // never touch the TPM
)

// ParseTPM parses a cfs.tpm= value.
func ParseTPM(value string) (TPMMode, error) {
	switch m := TPMMode(value); m {
	case TPMRequired, TPMIfPresent, TPMOff:
		return m, nil
	}
	return "", &InvalidError{Param: ParamTPM, Value: value, Reason: "want required, if-present or off"}
}

// ParseCommit parses a cfs.commit= value: a commit ID, 64 hex characters
// (lowercase: the form cfs writes, and the only one, so that a commit has
// exactly one spelling on the command line).
func ParseCommit(value string) (commit.ID, error) {
	if len(value) != 64 || strings.ToLower(value) != value {
		return commit.ID{}, &InvalidError{Param: ParamCommit, Value: value, Reason: "want 64 lowercase hex characters"}
	}
	id, err := commit.ParseID(value)
	if err != nil {
		return commit.ID{}, &InvalidError{Param: ParamCommit, Value: value, Reason: "not hex"}
	}
	return id, nil
}

// MaxStaterootLen bounds a stateroot name.
const MaxStaterootLen = 64

// ParseStateroot checks a cfs.stateroot= value: 1 to 64 ASCII letters,
// digits, '.', '_' or '-', not starting with '.' or '-' (it names a
// directory and appears in BLS titles and file names).
func ParseStateroot(value string) (string, error) {
	bad := func(reason string) (string, error) {
		return "", &InvalidError{Param: ParamStateroot, Value: value, Reason: reason}
	}
	if value == "" || len(value) > MaxStaterootLen {
		return bad(fmt.Sprintf("want 1 to %d characters", MaxStaterootLen))
	}
	if value[0] == '.' || value[0] == '-' {
		return bad("must not start with '.' or '-'")
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return bad("want only ASCII letters, digits, '.', '_' and '-'")
		}
	}
	return value, nil
}

// RootKind says how a root= value names the device.
type RootKind string

const (
	RootPath      RootKind = "path"      // /dev/...
	RootUUID      RootKind = "uuid"      // UUID=... (file system UUID)
	RootPartUUID  RootKind = "partuuid"  // PARTUUID=... (GPT/MBR partition UUID, optionally /PARTNROFF=n)
	RootLabel     RootKind = "label"     // LABEL=...
	RootPartLabel RootKind = "partlabel" // PARTLABEL=...
	RootOther     RootKind = "other"     // anything else the kernel or systemd knows (major:minor, gpt-auto, tmpfs, ...)
)

// Root is a parsed root= value.
type Root struct {
	Kind RootKind
	// Value is the part after the KIND= prefix (UUID=..., LABEL=...), or
	// the whole value for RootPath and RootOther.
	Value string
}

// String returns the root= value.
func (r Root) String() string {
	switch r.Kind {
	case RootUUID:
		return "UUID=" + r.Value
	case RootPartUUID:
		return "PARTUUID=" + r.Value
	case RootLabel:
		return "LABEL=" + r.Value
	case RootPartLabel:
		return "PARTLABEL=" + r.Value
	}
	return r.Value
}

// ParseRoot classifies a root= value. It only rejects what cannot name a
// device: an empty value, an empty identifier after a prefix, or control
// characters.
func ParseRoot(value string) (Root, error) {
	if value == "" || hasControl(value) {
		return Root{}, &InvalidError{Param: ParamRoot, Value: value, Reason: "empty or contains control characters"}
	}
	for _, p := range []struct {
		prefix string
		kind   RootKind
	}{{"UUID=", RootUUID}, {"PARTUUID=", RootPartUUID}, {"LABEL=", RootLabel}, {"PARTLABEL=", RootPartLabel}} {
		if v, ok := strings.CutPrefix(value, p.prefix); ok {
			if v == "" {
				return Root{}, &InvalidError{Param: ParamRoot, Value: value, Reason: "empty identifier after " + p.prefix}
			}
			return Root{Kind: p.kind, Value: v}, nil
		}
	}
	if strings.HasPrefix(value, "/") {
		return Root{Kind: RootPath, Value: value}, nil
	}
	return Root{Kind: RootOther, Value: value}, nil
}

// Boot is what cfs reads from and writes to a deployment's command line.
// Zero values mean "parameter absent".
type Boot struct {
	Root       *Root
	Composefs  *Composefs
	Stateroot  string
	Deployment string
	Commit     *commit.ID
	TPM        TPMMode
}

// ParseBoot extracts and checks the cfs parameters of a split command
// line. Every parameter is optional. A parameter given without a value
// ("composefs" alone), with an invalid value, or several times with
// different values is an error: the kernel lets the last one win but
// composefs-rs takes the first, and a security parameter must not mean
// different things to different readers. Other parameters are ignored.
func ParseBoot(args []string) (*Boot, error) {
	b := &Boot{}
	for _, name := range []string{ParamRoot, ParamComposefs, ParamStateroot, ParamDeployment, ParamCommit, ParamTPM} {
		v, ok, err := single(args, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		switch name {
		case ParamRoot:
			r, err := ParseRoot(v)
			if err != nil {
				return nil, err
			}
			b.Root = &r
		case ParamComposefs:
			c, err := ParseComposefs(v)
			if err != nil {
				return nil, err
			}
			b.Composefs = &c
		case ParamStateroot:
			if b.Stateroot, err = ParseStateroot(v); err != nil {
				return nil, err
			}
		case ParamDeployment:
			if b.Deployment, err = ParseDeployment(v); err != nil {
				return nil, err
			}
		case ParamCommit:
			id, err := ParseCommit(v)
			if err != nil {
				return nil, err
			}
			b.Commit = &id
		case ParamTPM:
			if b.TPM, err = ParseTPM(v); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// single returns the value of a parameter that must appear with a value
// and, if repeated, always with the same value.
func single(args []string, name string) (string, bool, error) {
	var (
		val   string
		found bool
	)
	for _, a := range args {
		n, v, hasValue := Cut(a)
		if n != name {
			continue
		}
		if !hasValue {
			return "", false, &InvalidError{Param: name, Reason: "parameter without a value"}
		}
		if found && v != val {
			return "", false, &InvalidError{Param: name, Value: v,
				Reason: fmt.Sprintf("given more than once with different values (%q before)", truncate(val))}
		}
		val, found = v, true
	}
	return val, found, nil
}

// Args returns the parameters for b in a fixed order (root=, composefs=,
// cfs.stateroot=, cfs.deployment=, cfs.commit=, cfs.tpm=), checking each
// value as ParseBoot would; ParseBoot(b.Args()) gives b back.
func (b *Boot) Args() ([]string, error) {
	var out []string
	if b.Root != nil {
		r, err := ParseRoot(b.Root.String())
		if err != nil {
			return nil, err
		}
		if r != *b.Root {
			return nil, &InvalidError{Param: ParamRoot, Value: b.Root.String(), Reason: fmt.Sprintf("kind %q does not match the value", b.Root.Kind)}
		}
		out = append(out, ParamRoot+"="+b.Root.String())
	}
	if b.Composefs != nil {
		if _, err := ParseComposefs(b.Composefs.String()); err != nil || (b.Composefs.Algorithm != SHA256 && b.Composefs.Algorithm != SHA512) {
			return nil, &InvalidError{Param: ParamComposefs, Value: b.Composefs.String(), Reason: "unknown algorithm " + string(b.Composefs.Algorithm)}
		}
		out = append(out, b.Composefs.Arg())
	}
	if b.Stateroot != "" {
		if _, err := ParseStateroot(b.Stateroot); err != nil {
			return nil, err
		}
		out = append(out, ParamStateroot+"="+b.Stateroot)
	}
	if b.Deployment != "" {
		if _, err := ParseDeployment(b.Deployment); err != nil {
			return nil, err
		}
		out = append(out, ParamDeployment+"="+b.Deployment)
	}
	if b.Commit != nil {
		out = append(out, ParamCommit+"="+b.Commit.String())
	}
	if b.TPM != "" {
		if _, err := ParseTPM(string(b.TPM)); err != nil {
			return nil, err
		}
		out = append(out, ParamTPM+"="+string(b.TPM))
	}
	for _, a := range out {
		if err := checkArg(a); err != nil {
			return nil, err
		}
	}
	return out, nil
}
