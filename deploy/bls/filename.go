package bls

import (
	"fmt"
	"strconv"
	"strings"
)

// Suffix is the file name suffix of Type #1 entries.
const Suffix = ".conf"

// maxTries is the largest counter systemd accepts (INT_MAX); larger values
// make systemd's userspace refuse the name, so ParseFileName does too.
const maxTries = 1<<31 - 1

// Name is an entry file name split into its base and its Automatic Boot
// Assessment counters: "BASE+LEFT-DONE.conf", "BASE+LEFT.conf" (DONE = 0)
// or, without boot counting, "BASE.conf".
//
// The boot loader renames BASE+LEFT-DONE.conf to BASE+(LEFT-1)-(DONE+1).conf
// before each attempt; a successful boot (systemd-bless-boot "good") renames
// it to BASE.conf; an entry with LEFT = 0 is "bad" and sorts last.
type Name struct {
	Base       string // without counters and without the ".conf" suffix
	Left       int    // tries left; meaningful only if HasCounter
	Done       int    // tries done; meaningful only if HasCounter
	HasCounter bool
}

// ParseFileName splits an entry file name. The suffix must be ".conf" (any
// case: the ESP is VFAT). Like systemd, the counter is the last "+" followed
// by decimal digits, optionally "-" and more digits, immediately before the
// suffix; anything else ("foo+x.conf", "foo+1-2-3.conf") is no counter and
// stays part of the base. Counters above 2147483647 are an error, as in
// systemd's boot_filename_extract_tries.
func ParseFileName(name string) (Name, error) {
	if len(name) < len(Suffix) || !strings.EqualFold(name[len(name)-len(Suffix):], Suffix) {
		return Name{}, invalid(0, "", "file name %q does not end in %s", name, Suffix)
	}
	stem := name[:len(name)-len(Suffix)]
	plus := strings.LastIndexByte(stem, '+')
	if plus < 0 {
		return Name{Base: stem}, nil
	}
	rest := stem[plus+1:]
	leftStr, doneStr, hasDone := strings.Cut(rest, "-")
	if !allDigits(leftStr) || (hasDone && !allDigits(doneStr)) {
		return Name{Base: stem}, nil
	}
	left, err := parseCounter(name, leftStr)
	if err != nil {
		return Name{}, err
	}
	done := 0
	if hasDone {
		if done, err = parseCounter(name, doneStr); err != nil {
			return Name{}, err
		}
	}
	return Name{Base: stem[:plus], Left: left, Done: done, HasCounter: true}, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func parseCounter(name, s string) (int, error) {
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return 0, nil
	}
	if len(s) > 10 {
		return 0, invalid(0, "", "file name %q: boot counter out of range", name)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxTries {
		return 0, invalid(0, "", "file name %q: boot counter out of range", name)
	}
	return int(v), nil
}

// FileName returns "base+left-done.conf", or "base+left.conf" when done is
// 0 (the form systemd-bless-boot and kernel-install write).
func FileName(base string, left, done int) string {
	if done == 0 {
		return fmt.Sprintf("%s+%d%s", base, left, Suffix)
	}
	return fmt.Sprintf("%s+%d-%d%s", base, left, done, Suffix)
}

// String returns the canonical file name: BlessedName without a counter,
// FileName(Base, Left, Done) with one. (It may differ from the name that was
// parsed in zero padding or an explicit "-0".)
func (n Name) String() string {
	if !n.HasCounter {
		return n.BlessedName()
	}
	return FileName(n.Base, n.Left, n.Done)
}

// Bad reports whether boot counting ran out: a counter with no tries left
// ("+0" or "+0-N"). Bad entries sort after all others.
func (n Name) Bad() bool { return n.HasCounter && n.Left == 0 }

// Indeterminate reports whether the entry is still being assessed: a
// counter with tries left.
func (n Name) Indeterminate() bool { return n.HasCounter && n.Left > 0 }

// Blessed reports whether the entry is not (or no longer) subject to boot
// counting: no counter in the name, the state systemd-bless-boot leaves
// after a successful boot ("good").
func (n Name) Blessed() bool { return !n.HasCounter }

// BlessedName is the name systemd-bless-boot gives the entry after a
// successful boot: the counter removed, "BASE.conf".
func (n Name) BlessedName() string { return n.Base + Suffix }

// BadName is the name systemd-bless-boot gives the entry when the boot is
// declared bad: tries left set to zero, tries done kept ("BASE+0.conf" or
// "BASE+0-DONE.conf").
func (n Name) BadName() string { return FileName(n.Base, 0, n.Done) }

// AfterAttempt is the name the boot loader renames a counted entry to when
// it tries to boot it (LEFT-1, not below 0, and DONE+1); an entry without a
// counter is returned unchanged.
func (n Name) AfterAttempt() Name {
	if !n.HasCounter {
		return n
	}
	if n.Left > 0 {
		n.Left--
	}
	if n.Done < maxTries {
		n.Done++
	}
	return n
}

// id is what systemd-boot compares in its final tie-break: the file name
// without counters, suffix included, case-folded (the ESP is VFAT).
func (n Name) id() string { return strings.ToLower(n.Base + Suffix) }

// ValidFileName checks an entry file name against the specification's
// character set (ASCII letters, digits, "+", "-", "_", "."), its length
// limit (1 to 255 bytes, suffix included) and the ".conf" suffix; it also
// refuses names starting with "." (boot loaders skip hidden files) and
// names whose counter ParseFileName rejects.
func ValidFileName(name string) error {
	if len(name) == 0 || len(name) > 255 {
		return invalid(0, "", "file name %q: length must be 1 to 255 bytes", name)
	}
	if name[0] == '.' {
		return invalid(0, "", "file name %q starts with '.'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '+', c == '-', c == '_', c == '.':
		default:
			return invalid(0, "", "file name %q: character %q outside [A-Za-z0-9+-_.]", name, c)
		}
	}
	if !strings.HasSuffix(name, Suffix) || len(name) == len(Suffix) {
		return invalid(0, "", "file name %q: want NAME%s", name, Suffix)
	}
	_, err := ParseFileName(name)
	return err
}
