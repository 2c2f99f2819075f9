// Package cmdline splits, joins, queries and edits kernel command lines, and
// parses the parameters cfs puts on them (composefs=, cfs.deployment=,
// cfs.tpm=, cfs.commit=, cfs.stateroot=, root=). Everything here is a pure
// function of its arguments.
//
// # The kernel's syntax
//
// Split follows the kernel's parse_args/next_arg (lib/cmdline.c,
// kernel/params.c) byte for byte:
//
//   - Parameters are separated by runs of white space, where white space is
//     what the kernel's isspace accepts: space, \t, \n, \v, \f, \r and also
//     the byte 0xA0 (Latin-1 no-break space in the kernel's ctype table; in
//     UTF-8 text it is the second byte of characters such as "à", which the
//     kernel therefore splits unless they are quoted).
//   - A double quote toggles quoting wherever it appears; white space inside
//     quotes does not separate. There is no escape character, so a
//     parameter can never contain a literal '"' that survives intact.
//   - Quotes are removed only in two places: a '"' opening the whole
//     parameter (with a '"' closing it), and a '"' right after the first
//     '=' (with a '"' closing the parameter). Other quotes stay in the
//     text: a"b c"d is the one parameter `a"b c"d`.
//   - The name/value split is at the first '=' that is not the very first
//     byte ("=a=b" is name "=a", value "b").
//   - An unterminated quote runs to the end of the line; a NUL byte ends it.
//
// Parameters are handled as strings "name" or "name=value" with the quotes
// already removed (the form init and the kernel's handlers receive), so
// Get("root") on `root="/dev/disk/by-label/my root"` is "/dev/disk/by-label/my
// root". Join adds quotes back where they are needed, and refuses what the
// kernel could not split back: values containing '"', newlines, carriage
// returns or NUL, and empty parameters.
//
// Names compare exactly. The kernel treats '-' and '_' alike in the names
// of its own parameters (parameq), but the parameters this package
// interprets are read by cfs, which does not. Parsing does not stop at
// "--" (which hands the rest to init) either.
package cmdline

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is the class of every error of this package; each one is an
// *InvalidError wrapping it.
var ErrInvalid = errors.New("invalid kernel command line")

// InvalidError describes a parameter that cannot be used: Param is the
// parameter name (or the whole parameter, for Join), Value the offending
// value if any.
type InvalidError struct {
	Param  string
	Value  string
	Reason string
}

func (e *InvalidError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("kernel command line: %s=%q: %s", e.Param, truncate(e.Value), e.Reason)
	}
	return fmt.Sprintf("kernel command line: %q: %s", truncate(e.Param), e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// isSpace is the kernel's isspace(): the _S class of lib/ctype.c.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
		return true
	}
	return false
}

// Split splits a command line into parameters exactly as the kernel's
// next_arg does, quotes removed (see the package documentation).
func Split(s string) []string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var out []string
	i := skipSpaces(s, 0)
	for i < len(s) {
		arg, next := nextArg(s[i:])
		out = append(out, arg)
		i = skipSpaces(s, i+next)
	}
	return out
}

func skipSpaces(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// nextArg parses the parameter at the start of s (which does not start
// with white space) and returns it, quotes removed, and the number of
// bytes consumed, not counting the separator after it.
func nextArg(s string) (string, int) {
	a := s
	skipped := 0
	quoted, inQuote := false, false
	if a[0] == '"' {
		a = a[1:]
		skipped = 1
		quoted, inQuote = true, true
	}
	i, equals := 0, 0
	for ; i < len(a); i++ {
		c := a[i]
		if isSpace(c) && !inQuote {
			break
		}
		if equals == 0 && c == '=' {
			equals = i // an '=' at index 0 leaves equals at 0: keep looking
		}
		if c == '"' {
			inQuote = !inQuote
		}
	}
	end := i // exclusive end of the parameter's text in a
	var arg string
	if equals == 0 {
		if quoted && i > 0 && a[i-1] == '"' {
			end = i - 1
		}
		arg = a[:end]
	} else {
		vstart := equals + 1
		if vstart < i && a[vstart] == '"' {
			vstart++
			if a[i-1] == '"' {
				end = i - 1
			}
		}
		// Whole-parameter quotes: the final quote goes (at most once: if
		// the value's quote already took it, end is i-1 either way).
		if quoted && a[i-1] == '"' {
			end = i - 1
		}
		val := ""
		if vstart < end {
			val = a[vstart:end]
		}
		arg = a[:equals] + "=" + val
	}
	return arg, skipped + i
}

// Cut splits a parameter at its first '=' after the first byte (the
// kernel's rule): "root=/dev/sda" is ("root", "/dev/sda", true), "ro" is
// ("ro", "", false), "a=" is ("a", "", true) and "=x" is ("=x", "", false).
func Cut(arg string) (name, value string, hasValue bool) {
	if len(arg) > 1 {
		if i := strings.IndexByte(arg[1:], '='); i >= 0 {
			return arg[:i+1], arg[i+2:], true
		}
	}
	return arg, "", false
}

// Name returns the parameter's name (everything before the '=' Cut splits
// at).
func Name(arg string) string {
	n, _, _ := Cut(arg)
	return n
}

// Join renders parameters as a command line that Split turns back into
// exactly the same parameters: unchanged when they hold no white space,
// otherwise as name="value" (or "whole parameter" when the name itself
// holds white space). It refuses, with an *InvalidError, empty parameters
// and parameters containing '"', '\n', '\r' or NUL: the kernel has no way
// to carry them (and a newline would also break a BLS "options" line).
func Join(args []string) (string, error) {
	var b strings.Builder
	for i, arg := range args {
		if err := checkArg(arg); err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		name, value, hasValue := Cut(arg)
		switch {
		case !hasSpace(arg):
			b.WriteString(arg)
		case hasValue && !hasSpace(name):
			b.WriteString(name)
			b.WriteString(`="`)
			b.WriteString(value)
			b.WriteByte('"')
		default:
			b.WriteByte('"')
			b.WriteString(arg)
			b.WriteByte('"')
		}
	}
	return b.String(), nil
}

func checkArg(arg string) error {
	if arg == "" {
		return &InvalidError{Param: arg, Reason: "empty parameter"}
	}
	if strings.ContainsAny(arg, "\"\n\r\x00") {
		return &InvalidError{Param: arg, Reason: `contains '"', a newline, a carriage return or NUL, which the kernel cannot represent`}
	}
	return nil
}

func hasSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return true
		}
	}
	return false
}

// Get returns the value of the last parameter named name — the kernel and
// most handlers let a later parameter override an earlier one — and
// whether there is one. A parameter without '=' has the value "".
func Get(args []string, name string) (value string, found bool) {
	for i := len(args) - 1; i >= 0; i-- {
		if n, v, _ := Cut(args[i]); n == name {
			return v, true
		}
	}
	return "", false
}

// GetAll returns the values of every parameter named name, in order (for
// parameters that may repeat, such as console=); nil if there is none.
func GetAll(args []string, name string) []string {
	var out []string
	for _, arg := range args {
		if n, v, _ := Cut(arg); n == name {
			out = append(out, v)
		}
	}
	return out
}

// Has reports whether a parameter named name is present, with or without
// a value.
func Has(args []string, name string) bool {
	_, ok := Get(args, name)
	return ok
}

// Append implements --karg=NAME[=VALUE]: it returns args with arg added at
// the end. Deduplication: if a parameter identical to arg (same name, same
// value, byte for byte) is already present, args is returned unchanged, so
// that applying the same --karg twice is harmless; parameters with the
// same name and a different value are kept, since some parameters are
// legitimately repeated (console=ttyS0 console=tty0). To change a value,
// use Set (or Delete then Append). arg must be representable (see Join).
// The input slice is never modified.
func Append(args []string, arg string) ([]string, error) {
	if err := checkArg(arg); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(args)+1)
	out = append(out, args...)
	for _, a := range args {
		if a == arg {
			return out, nil
		}
	}
	return append(out, arg), nil
}

// Set replaces every parameter named like arg by arg itself, at the
// position of the first one (appending it if there is none): ostree's
// "replace" semantics for NAME=VALUE. arg must be representable (see
// Join). The input slice is never modified.
func Set(args []string, arg string) ([]string, error) {
	if err := checkArg(arg); err != nil {
		return nil, err
	}
	name := Name(arg)
	out := make([]string, 0, len(args)+1)
	placed := false
	for _, a := range args {
		if Name(a) != name {
			out = append(out, a)
			continue
		}
		if !placed {
			out = append(out, arg)
			placed = true
		}
	}
	if !placed {
		out = append(out, arg)
	}
	return out, nil
}

// Delete implements --karg-delete: spec "NAME" removes every parameter
// named NAME, with or without a value; spec "NAME=VALUE" removes only the
// parameters that are exactly NAME=VALUE (so "quiet=" removes "quiet=" but
// not "quiet"). It returns the remaining parameters and how many were
// removed; removing nothing is not an error here (ostree reports it as one;
// callers that want that check removed == 0). Unlike ostree, a bare NAME
// with several values removes them all instead of failing. The input slice
// is never modified.
func Delete(args []string, spec string) (out []string, removed int) {
	name, _, hasValue := Cut(spec)
	out = make([]string, 0, len(args))
	for _, a := range args {
		if (hasValue && a == spec) || (!hasValue && Name(a) == name) {
			removed++
			continue
		}
		out = append(out, a)
	}
	return out, removed
}
