package kvconf

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	var got []string
	seen, err := Parse([]byte("# comment\n\n a = 1 \nb=two words\n\tc =\n"), func(k, v string) error {
		got = append(got, k+"|"+v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a|1,b|two words,c|" || len(seen) != 3 || !seen["b"] {
		t.Fatalf("got %q, seen %v", got, seen)
	}
	bad := errors.New("bad value")
	for text, want := range map[string]string{
		"a = 1\nnoequals\n": "line 2: want key = value",
		"a = 1\na = 2\n":    "line 2: a given twice",
		"\n\nx = y\n":       "line 3: bad value",
	} {
		_, err := Parse([]byte(text), func(k, v string) error {
			if k == "x" {
				return bad
			}
			return nil
		})
		if err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}
