package dump

import (
	"math"
	"strings"
	"testing"
)

func TestAppendEscaped(t *testing.T) {
	tests := []struct {
		in    string
		flags escapeFlags
		want  string
	}{
		{"plain", 0, "plain"},
		{"with space", 0, `with\x20space`},
		{"with space", escKeepSpace, "with space"},
		{"tab\there", 0, `tab\there`},
		{"new\nline", 0, `new\nline`},
		{"cr\rx", 0, `cr\rx`},
		{`back\slash`, 0, `back\\slash`},
		{`back\slash`, escKeepSpace, `back\\slash`},
		{"a=b", 0, "a=b"},
		{"a=b", escEqual, `a\x3db`},
		{"é", 0, `\xc3\xa9`}, // UTF-8 is hex-escaped (C locale)
		{"日", escKeepSpace, `\xe6\x97\xa5`},
		{"bad\xffutf8", 0, `bad\xffutf8`},
		{"ctrl\x01\x7f", 0, `ctrl\x01\x7f`},
		{"\x00", 0, `\x00`},
		{"-", 0, "-"},
		{"-", escLoneDash, `\x2d`},
		{"--", escLoneDash, "--"},
		{"-x", escLoneDash, "-x"},
		{"~!#+,", 0, "~!#+,"},
		{"", escLoneDash, ""},
	}
	for _, tt := range tests {
		if got := string(appendEscaped(nil, tt.in, tt.flags)); got != tt.want {
			t.Errorf("appendEscaped(%q, %b) = %q, want %q", tt.in, tt.flags, got, tt.want)
		}
		if got := string(appendEscaped(nil, []byte(tt.in), tt.flags)); got != tt.want {
			t.Errorf("appendEscaped([]byte %q, %b) = %q, want %q", tt.in, tt.flags, got, tt.want)
		}
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct {
		in, want string
		err      string
	}{
		{in: "plain", want: "plain"},
		{in: `a\x20b`, want: "a b"},
		{in: `\x2d`, want: "-"},
		{in: `\xFF\xfe`, want: "\xff\xfe"},
		{in: `\\\n\r\t`, want: "\\\n\r\t"},
		{in: `\x00`, want: "\x00"},
		{in: "raw\xffbyte=", want: "raw\xffbyte="},
		{in: `tail\`, err: "no character after escape"},
		{in: `\x`, err: "no hex characters"},
		{in: `\x4`, err: "no hex characters"},
		{in: `\xg0`, err: "invalid hex characters"},
		{in: `\x0g`, err: "invalid hex characters"},
		{in: `\a`, err: `unsupported escape '\a'`},
		{in: `\ `, err: `unsupported escape '\ '`},
	}
	for _, tt := range tests {
		got, err := appendUnescaped(nil, []byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("unescape(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("unescape(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestEscapeRoundTrip: every byte string survives escape → unescape with
// every flag combination.
func TestEscapeRoundTrip(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	inputs := []string{string(all), "-", "", " ", "=", `\`, "a b=c\\d\ne"}
	for _, in := range inputs {
		for f := escapeFlags(0); f < 8; f++ {
			esc := appendEscaped(nil, in, f)
			for _, c := range esc {
				if c < ' ' || c >= 0x7f || (c == ' ' && f&escKeepSpace == 0) || (c == '=' && f&escEqual != 0) {
					t.Fatalf("escaped %q (flags %b) contains byte %#x: %q", in, f, c, esc)
				}
			}
			back, err := appendUnescaped(nil, esc)
			if err != nil || string(back) != in {
				t.Errorf("round trip of %q (flags %b): %q, %v", in, f, back, err)
			}
		}
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		in   string
		base uint64
		want uint64
		ok   bool
	}{
		{"0", 10, 0, true},
		{"1700000000", 10, 1700000000, true},
		{"18446744073709551615", 10, math.MaxUint64, true},
		{"18446744073709551616", 10, math.MaxUint64, true}, // strtoull saturates
		{"99999999999999999999999", 10, math.MaxUint64, true},
		{"+5", 10, 5, true},
		{"-1", 10, math.MaxUint64, true}, // strtoull negates modulo 2^64
		{"\t7", 10, 7, true},             // leading C whitespace
		{"0755", 8, 0o755, true},
		{"100644", 8, 0o100644, true},
		{"", 10, 0, false},
		{"-", 10, 0, false},
		{"+", 10, 0, false},
		{"abc", 10, 0, false},
		{"1a", 10, 0, false},
		{"12 ", 10, 0, false},
		{"0x10", 10, 0, false},
		{"8", 8, 0, false},
		{"1.5", 10, 0, false},
	}
	for _, tt := range tests {
		got, ok := parseUint([]byte(tt.in), tt.base)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseUint(%q, %d) = %d, %v; want %d, %v", tt.in, tt.base, got, ok, tt.want, tt.ok)
		}
	}
}
