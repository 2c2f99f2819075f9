// Package bls reads and writes Boot Loader Specification Type #1 entries
// ($BOOT/loader/entries/*.conf), parses and builds Automatic Boot Assessment
// file names (name+LEFT-DONE.conf), and orders entries the way systemd-boot
// does.
//
// References: the UAPI Boot Loader Specification
// (uapi-group specs/boot_loader_specification.md), the UAPI Version Format
// Specification (specs/version_format_specification.md),
// https://systemd.io/AUTOMATIC_BOOT_ASSESSMENT, and systemd-boot's
// boot_entry_compare / boot_entry_parse_tries, which this package mirrors.
//
// # Parsing
//
// An entry is a UTF-8 text file of "key value" lines. Lines are trimmed of
// spaces, tabs and a trailing carriage return; empty lines and lines starting
// with '#' are ignored; the key is the first word and the value is the rest
// of the line after the separating spaces or tabs. "initrd" and "options"
// may repeat (all values are kept, in order; the kernel command line is the
// "options" values joined by single spaces). A single-valued key given twice
// keeps its last value, as systemd does. Unknown keys (uki, devicetree-overlay,
// profile, grub_users, ...) are kept in order in Entry.Extra and written back
// verbatim. An "options" line without a value is ignored; any other known
// key without a value is an error.
//
// Parse enforces the specification's hard rules (MaxEntrySize, MaxLineLength,
// valid UTF-8, no NUL bytes, machine-id of 32 lowercase hex characters, a
// "linux" or "efi" key — or "uki"/"uki-url", which newer systemd-boot
// accepts — and not both "linux" and "efi", which systemd-boot refuses).
// Validate additionally requires normalized paths (no ".", ".." or empty
// components), the spec's recommendation, which every entry cfs writes
// follows; foreign entries that merely ignore it still parse.
//
// # Ordering and GRUB
//
// Sort implements systemd-boot's order (see Compare). GRUB's blscfg module
// (Fedora/RHEL grub2) does not implement it: it ignores sort-key, machine-id
// and boot counting and orders entries by their "version" key and then by
// their file name, both compared rpm-vercmp style, newest first (see
// ostree#2961 and bootc's boot.rs). cfs therefore names its entries so that
// every order agrees: "cfs-<serial>.conf" with "version <serial>" and
// "sort-key cfs", where <serial> is a decimal deployment serial that only
// grows. Under systemd-boot, GRUB and a plain file-name version sort the
// highest serial comes first; TestCfsNamesOrderLikeGRUB checks it. GRUB has
// no boot counting, so there a "bad" entry (+0) is not moved to the end.
package bls

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxEntrySize bounds an entry file (GRUB refuses larger ones too).
const MaxEntrySize = 1 << 20

// MaxLineLength bounds one line of an entry.
const MaxLineLength = 64 << 10

// ErrInvalid is the class of all syntax and validation errors; every such
// error is an *Error wrapping it.
var ErrInvalid = errors.New("invalid boot loader entry")

// Error describes an invalid entry. Line is the 1-based line number, or 0
// when the problem is not tied to one line; Key names the offending key
// when there is one.
type Error struct {
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("bls")
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *Error) Unwrap() error { return ErrInvalid }

func invalid(line int, key, format string, args ...any) *Error {
	return &Error{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Field is one key/value line whose key this package does not interpret.
type Field struct {
	Key   string
	Value string
}

// Entry is a Type #1 boot loader entry. Empty strings and nil slices mean
// "key absent".
type Entry struct {
	Title        string
	Version      string
	MachineID    string // 32 lowercase hex characters
	SortKey      string
	Linux        string
	Initrd       []string // in order
	EFI          string
	Options      []string // one element per "options" line, in order
	Devicetree   string
	Architecture string
	Extra        []Field // unknown keys, in file order
}

// Known keys, in the order Marshal writes them.
const (
	keyTitle        = "title"
	keyVersion      = "version"
	keyMachineID    = "machine-id"
	keySortKey      = "sort-key"
	keyLinux        = "linux"
	keyInitrd       = "initrd"
	keyEFI          = "efi"
	keyDevicetree   = "devicetree"
	keyArchitecture = "architecture"
	keyOptions      = "options"
)

func isKnownKey(k string) bool {
	switch k {
	case keyTitle, keyVersion, keyMachineID, keySortKey, keyLinux, keyInitrd,
		keyEFI, keyDevicetree, keyArchitecture, keyOptions:
		return true
	}
	return false
}

// Cmdline returns the kernel command line: the "options" values joined by
// single spaces, as systemd-boot concatenates them.
func (e *Entry) Cmdline() string { return strings.Join(e.Options, " ") }

// Parse reads one entry. I/O errors are returned wrapped; malformed input
// yields an *Error (errors.Is(err, ErrInvalid)).
func Parse(r io.Reader) (*Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxEntrySize+1))
	if err != nil {
		return nil, fmt.Errorf("bls: read entry: %w", err)
	}
	if len(data) > MaxEntrySize {
		return nil, invalid(0, "", "entry larger than %d bytes", MaxEntrySize)
	}
	e := &Entry{}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) > MaxLineLength {
			return nil, invalid(lineNo, "", "line longer than %d bytes", MaxLineLength)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, invalid(lineNo, "", "NUL byte")
		}
		if !utf8.Valid(line) {
			return nil, invalid(lineNo, "", "not valid UTF-8")
		}
		if err := e.parseLine(lineNo, trimSpace(string(line))); err != nil {
			return nil, err
		}
	}
	if err := e.validate(false); err != nil {
		return nil, err
	}
	return e, nil
}

// trimSpace removes what Parse treats as insignificant around a line or a
// value: spaces, tabs and carriage returns.
func trimSpace(s string) string { return strings.Trim(s, " \t\r") }

func isSep(c byte) bool { return c == ' ' || c == '\t' }

func (e *Entry) parseLine(n int, line string) error {
	if line == "" || line[0] == '#' {
		return nil
	}
	key, value := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		key, value = line[:i], strings.TrimLeft(line[i:], " \t")
	}
	if value == "" && isKnownKey(key) {
		if key == keyOptions {
			return nil // systemd accepts an empty options line; it adds nothing
		}
		return invalid(n, key, "no value")
	}
	switch key {
	case keyTitle:
		e.Title = value
	case keyVersion:
		e.Version = value
	case keyMachineID:
		if !validMachineID(value) {
			return invalid(n, key, "want 32 lowercase hex characters, got %q", value)
		}
		e.MachineID = value
	case keySortKey:
		e.SortKey = value
	case keyLinux:
		e.Linux = value
	case keyInitrd:
		e.Initrd = append(e.Initrd, value)
	case keyEFI:
		e.EFI = value
	case keyOptions:
		e.Options = append(e.Options, value)
	case keyDevicetree:
		e.Devicetree = value
	case keyArchitecture:
		e.Architecture = value
	default:
		if err := checkExtraKey(key); err != nil {
			err.Line = n
			return err
		}
		e.Extra = append(e.Extra, Field{Key: key, Value: value})
	}
	return nil
}

func validMachineID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Marshal returns the entry in the fixed key order title, version,
// machine-id, sort-key, linux, initrd..., efi, devicetree, architecture,
// options..., then the unknown keys in their original order; one
// "key value" line each, absent keys omitted. The output of a valid entry
// parses back to an identical Entry. Marshal does not validate: call
// Validate (WriteEntry does) before writing an entry built by hand.
func (e *Entry) Marshal() []byte {
	var b bytes.Buffer
	line := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteString(k)
		b.WriteByte(' ')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	line(keyTitle, e.Title)
	line(keyVersion, e.Version)
	line(keyMachineID, e.MachineID)
	line(keySortKey, e.SortKey)
	line(keyLinux, e.Linux)
	for _, v := range e.Initrd {
		line(keyInitrd, v)
	}
	line(keyEFI, e.EFI)
	line(keyDevicetree, e.Devicetree)
	line(keyArchitecture, e.Architecture)
	for _, v := range e.Options {
		line(keyOptions, v)
	}
	for _, f := range e.Extra {
		b.WriteString(f.Key)
		if f.Value != "" {
			b.WriteByte(' ')
			b.WriteString(f.Value)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Validate checks that the entry is one cfs may write: everything Parse
// enforces, values that survive Marshal and Parse unchanged (valid UTF-8,
// no NUL or newline, no leading or trailing space, tab or carriage return,
// no empty initrd/options element), well-formed unknown keys, and
// normalized paths in linux, initrd, efi and devicetree.
func (e *Entry) Validate() error { return e.validate(true) }

func (e *Entry) validate(strict bool) error {
	single := []struct{ key, val string }{
		{keyTitle, e.Title}, {keyVersion, e.Version}, {keyMachineID, e.MachineID},
		{keySortKey, e.SortKey}, {keyLinux, e.Linux}, {keyEFI, e.EFI},
		{keyDevicetree, e.Devicetree}, {keyArchitecture, e.Architecture},
	}
	for _, kv := range single {
		if err := checkValue(kv.key, kv.val, true); err != nil {
			return err
		}
	}
	for _, v := range e.Initrd {
		if err := checkValue(keyInitrd, v, false); err != nil {
			return err
		}
	}
	for _, v := range e.Options {
		if err := checkValue(keyOptions, v, false); err != nil {
			return err
		}
	}
	hasUKI := false
	for _, f := range e.Extra {
		if err := checkExtraKey(f.Key); err != nil {
			return err
		}
		if err := checkValue(f.Key, f.Value, true); err != nil {
			return err
		}
		if (f.Key == "uki" || f.Key == "uki-url") && f.Value != "" {
			hasUKI = true
		}
	}
	if e.MachineID != "" && !validMachineID(e.MachineID) {
		return invalid(0, keyMachineID, "want 32 lowercase hex characters, got %q", e.MachineID)
	}
	if e.Linux == "" && e.EFI == "" && !hasUKI {
		return invalid(0, "", "entry has neither a linux nor an efi key")
	}
	if e.Linux != "" && e.EFI != "" {
		return invalid(0, "", "entry has both a linux and an efi key")
	}
	if strict {
		paths := []struct{ key, val string }{{keyLinux, e.Linux}, {keyEFI, e.EFI}, {keyDevicetree, e.Devicetree}}
		for _, v := range e.Initrd {
			paths = append(paths, struct{ key, val string }{keyInitrd, v})
		}
		for _, p := range paths {
			if p.val != "" && !normalizedPath(p.val) {
				return invalid(0, p.key, "path %q is not normalized (no \".\", \"..\" or empty components)", p.val)
			}
		}
	}
	return nil
}

// checkValue rejects values that would not survive Marshal then Parse.
func checkValue(key, v string, emptyOK bool) error {
	if v == "" {
		if emptyOK {
			return nil
		}
		return invalid(0, key, "empty value")
	}
	if !utf8.ValidString(v) {
		return invalid(0, key, "value is not valid UTF-8")
	}
	if strings.ContainsAny(v, "\x00\n") {
		return invalid(0, key, "value contains a NUL or newline")
	}
	if trimSpace(v) != v {
		return invalid(0, key, "value %q has leading or trailing white space", v)
	}
	if len(key)+1+len(v) > MaxLineLength {
		return invalid(0, key, "line longer than %d bytes", MaxLineLength)
	}
	return nil
}

func checkExtraKey(k string) *Error {
	switch {
	case k == "":
		return invalid(0, "", "empty key")
	case isKnownKey(k):
		return invalid(0, k, "known key stored as an unknown one")
	case k[0] == '#':
		return invalid(0, k, "key starts with '#'")
	case strings.ContainsAny(k, " \t\r\n\x00"):
		return invalid(0, k, "key contains white space or NUL")
	case !utf8.ValidString(k):
		return invalid(0, k, "key is not valid UTF-8")
	}
	return nil
}

// normalizedPath reports whether p (relative to the root of the partition,
// with an optional leading "/") has no ".", ".." or empty components.
func normalizedPath(p string) bool {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}
