// Package kvconf parses the small configuration files of cfs: one
// "key = value" a line, blank lines and lines starting with '#' ignored,
// spaces around key and value trimmed.
package kvconf

import (
	"bufio"
	"bytes"
	"fmt"
)

// Parse calls set for every key = value line of b, in order, and returns
// the keys seen. A line without '=', a key given twice, or an error from
// set (an unknown key, a bad value) stops it with an error naming the line.
func Parse(b []byte, set func(key, value string) error) (map[string]bool, error) {
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok {
			return seen, fmt.Errorf("line %d: want key = value", n)
		}
		key, value := string(bytes.TrimSpace(k)), string(bytes.TrimSpace(v))
		if seen[key] {
			return seen, fmt.Errorf("line %d: %s given twice", n, key)
		}
		seen[key] = true
		if err := set(key, value); err != nil {
			return seen, fmt.Errorf("line %d: %w", n, err)
		}
	}
	return seen, sc.Err()
}
