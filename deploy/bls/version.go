package bls

// CompareVersions compares two version strings by the UAPI Version Format
// Specification, exactly as systemd's strverscmp_improved ("systemd-analyze
// compare-versions"): it returns -1 if a is older than b, 0 if they are
// equivalent, +1 if a is newer.
//
// Characters other than ASCII letters, digits and "~-^." are separators
// and are skipped. At each position what comes next is ranked
//
//	"~" < end of string < "-" < "^" < "." < a letter or digit segment
//
// so 1.0~rc1 < 1.0 < 1.0-1 < 1.0^git1 < 1.0.1 < 1.0a. Numeric segments
// compare as numbers (leading zeros ignored) and beat alphabetic ones;
// alphabetic segments compare byte-wise (so "B" < "a"), a longer one
// winning over its own prefix.
func CompareVersions(a, b string) int {
	i, j := 0, 0
	for {
		for i < len(a) && !validVersionChar(a[i]) {
			i++
		}
		for j < len(b) && !validVersionChar(b[j]) {
			j++
		}
		ca, cb := at(a, i), at(b, j)

		// '~' marks pre-releases: older than anything, even the end.
		if ca == '~' || cb == '~' {
			if r := cmpBool(ca != '~', cb != '~'); r != 0 {
				return r
			}
			i++
			j++
			ca, cb = at(a, i), at(b, j)
		}

		// The string that has ended is older.
		if ca == 0 || cb == 0 {
			return cmpByte(ca, cb)
		}

		// '-' separates version and release; a string with it here is older.
		if ca == '-' || cb == '-' {
			if r := cmpBool(ca != '-', cb != '-'); r != 0 {
				return r
			}
			i++
			j++
			ca, cb = at(a, i), at(b, j)
		}

		// '^' marks patched releases: newer than anything but the end
		// (which was handled above) and a plain continuation.
		if ca == '^' || cb == '^' {
			if r := cmpBool(ca != '^', cb != '^'); r != 0 {
				return r
			}
			i++
			j++
			ca, cb = at(a, i), at(b, j)
		}

		// '.' separates point releases.
		if ca == '.' || cb == '.' {
			if r := cmpBool(ca != '.', cb != '.'); r != 0 {
				return r
			}
			i++
			j++
			ca, cb = at(a, i), at(b, j)
		}

		var ei, ej int
		if isDigit(ca) || isDigit(cb) {
			for ei = i; ei < len(a) && isDigit(a[ei]); ei++ {
			}
			for ej = j; ej < len(b) && isDigit(b[ej]); ej++ {
			}
			// A number is newer than no number (an alphabetic segment or
			// nothing).
			if r := cmpBool(ei != i, ej != j); r != 0 {
				return r
			}
			for i < ei && a[i] == '0' {
				i++
			}
			for j < ej && b[j] == '0' {
				j++
			}
			// More significant digits is a bigger number; equal lengths
			// compare digit by digit.
			if r := cmpInt(ei-i, ej-j); r != 0 {
				return r
			}
			if r := cmpString(a[i:ei], b[j:ej]); r != 0 {
				return r
			}
		} else {
			for ei = i; ei < len(a) && isAlpha(a[ei]); ei++ {
			}
			for ej = j; ej < len(b) && isAlpha(b[ej]); ej++ {
			}
			n := min(ei-i, ej-j)
			if r := cmpString(a[i:i+n], b[j:j+n]); r != 0 {
				return r
			}
			if r := cmpInt(ei-i, ej-j); r != 0 {
				return r
			}
		}
		i, j = ei, ej
	}
}

// at returns s[i], or 0 past the end (C's terminating NUL).
func at(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func validVersionChar(c byte) bool {
	return isDigit(c) || isAlpha(c) || c == '~' || c == '-' || c == '^' || c == '.'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpByte(a, b byte) int { return cmpInt(int(a), int(b)) }

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
