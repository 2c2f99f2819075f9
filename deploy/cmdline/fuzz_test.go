package cmdline

import (
	"reflect"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	"",
	"ro quiet root=/dev/sda1",
	`root="LABEL=my root" a="b c"d "x y" "a b=" =a=b`,
	`a"b c"d e "`,
	"title=voil\xc3\xa0 \t\v\f\r\n x",
	`""=x "a="b"" a="`,
	"composefs=?9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 cfs.tpm=off",
}

// FuzzSplitJoin: whenever Join accepts what Split produced, splitting
// the joined line gives the same parameters back (Split∘Join is the
// identity on representable parameters); nothing panics.
func FuzzSplitJoin(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := Split(s)
		for _, a := range args {
			if strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("Split(%q) returned a parameter with NUL", s)
			}
		}
		line, err := Join(args)
		if err != nil {
			return
		}
		if back := Split(line); !reflect.DeepEqual(back, args) {
			t.Fatalf("Split(%q) = %q\nJoin = %q\nSplit again = %q", s, args, line, back)
		}
		_, _ = ParseBoot(args)
	})
}

// FuzzJoinSplit: any list of parameters Join accepts (the input is split
// on '\x01' to build the list) comes back unchanged from Split.
func FuzzJoinSplit(f *testing.F) {
	f.Add("a\x01b c\x01=x y\x01a b=\x01k=v\tw")
	f.Add("title=voil\xc3\xa0\x01--")
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x01")
		line, err := Join(args)
		if err != nil {
			return
		}
		if back := Split(line); !reflect.DeepEqual(back, args) {
			t.Fatalf("args %q\nJoin = %q\nSplit = %q", args, line, back)
		}
		if out, err := Append(args, "x=y z"); err != nil || out[len(out)-1] != "x=y z" && !contains(args, "x=y z") {
			t.Fatalf("Append: %q, %v", out, err)
		}
		if out, _ := Delete(args, Name(args[0])); contains(out, args[0]) {
			t.Fatalf("Delete(%q) left %q", Name(args[0]), out)
		}
	})
}

func contains(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}
