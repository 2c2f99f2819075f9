package dump

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// escapeFlags select the variants of upstream's print_escaped.
type escapeFlags uint8

const (
	// escKeepSpace prints ' ' as is (composefs-info ls paths: C isprint
	// instead of isgraph).
	escKeepSpace escapeFlags = 1 << iota
	// escEqual hex-escapes '=' (xattr names and values).
	escEqual
	// escLoneDash prints a value that is exactly "-" as `\x2d`, so that it
	// cannot be read back as an absent optional field.
	escLoneDash
)

const hexDigits = "0123456789abcdef"

// verbatim marks the bytes appendEscaped prints as they are whatever the
// flags: printable, not space, not '\\' and not '='.
var verbatim = func() (t [256]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = c != '\\' && c != '='
	}
	return t
}()

// appendEscaped appends s escaped as composefs-info prints it (C locale):
// `\\`, `\n`, `\r`, `\t`, and `\xHH` (lowercase) for every other byte that
// is not printable-and-not-space, so every byte ≥ 0x80 is hex-escaped.
func appendEscaped[S ~string | ~[]byte](dst []byte, s S, flags escapeFlags) []byte {
	if flags&escLoneDash != 0 && len(s) == 1 && s[0] == '-' {
		return append(dst, `\x2d`...)
	}
	for i := 0; i < len(s); i++ {
		// Copy the run of bytes printed as they are in one append
		// (most names and paths are one such run).
		j := i
		for j < len(s) && verbatim[s[j]] {
			j++
		}
		dst = append(dst, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '=' && flags&escEqual != 0:
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		case c == ' ' && flags&escKeepSpace != 0, c > ' ' && c < 0x7f:
			dst = append(dst, c)
		default:
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return dst
}

var (
	errEscapeEnd = errors.New(`no character after escape '\'`)
	errHexEnd    = errors.New(`no hex characters after hex escape '\x'`)
	errHexDigit  = errors.New(`invalid hex characters after hex escape '\x'`)
)

// appendUnescaped appends the unescaped form of s to dst: `\\`, `\n`, `\r`,
// `\t` and `\xHH` (either case); any other escape is an error, as in
// upstream's unescape_string.
func appendUnescaped(dst, s []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(s) {
			return dst, errEscapeEnd
		}
		switch s[i] {
		case '\\':
			dst = append(dst, '\\')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'x':
			if i+2 >= len(s) {
				return dst, errHexEnd
			}
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return dst, errHexDigit
			}
			dst = append(dst, byte(hi<<4|lo))
			i += 2
		default:
			return dst, fmt.Errorf("unsupported escape '\\%c'", s[i])
		}
	}
	return dst, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseUint parses an integer field exactly as upstream does with
// strtoull(s, &end, base) followed by "*s == 0 || *end != 0 → error":
// optional leading C whitespace, an optional sign ('-' negates modulo
// 2^64), at least one digit, nothing after the digits; a value that
// overflows saturates to 2^64-1.
func parseUint(s []byte, base uint64) (uint64, bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var v uint64
	overflow := false
	for ; i < len(s); i++ {
		h := unhex(s[i])
		if h < 0 || uint64(h) >= base {
			break
		}
		d := uint64(h)
		if overflow {
			continue
		}
		hi, lo := bits.Mul64(v, base)
		sum, carry := bits.Add64(lo, d, 0)
		if hi != 0 || carry != 0 {
			overflow = true
			continue
		}
		v = sum
	}
	if i == start || i != len(s) {
		return 0, false
	}
	if overflow {
		return math.MaxUint64, true
	}
	if neg {
		v = -v
	}
	return v, true
}

func isCSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}
