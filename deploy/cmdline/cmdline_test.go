package cmdline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Each case was traced by hand through the kernel's next_arg
// (lib/cmdline.c) and parse_args (kernel/params.c).
func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   \t\n ", nil},
		{"ro quiet", []string{"ro", "quiet"}},
		{"  root=/dev/sda1 \t rw\n", []string{"root=/dev/sda1", "rw"}},
		{"a\vb\fc\rd", []string{"a", "b", "c", "d"}},
		// 0xA0 is white space for the kernel: UTF-8 "à" (C3 A0) is split.
		{"title=voil\xc3\xa0 x", []string{"title=voil\xc3", "x"}},
		{`title="voil` + "\xc3\xa0" + `"`, []string{"title=voil\xc3\xa0"}},
		// Quoted values: the quotes after '=' and at the very end go.
		{`root="/dev/disk/by-label/my root" ro`, []string{"root=/dev/disk/by-label/my root", "ro"}},
		{`a="b c"d`, []string{`a=b c"d`}}, // the closing quote is not last: kept
		{`a=""`, []string{"a="}},
		{`a="`, []string{"a="}},
		{`a="x y`, []string{"a=x y"}}, // unterminated: runs to the end
		{`a="x y b=c`, []string{"a=x y b=c"}},
		// Whole-parameter quotes.
		{`"a b" c`, []string{"a b", "c"}},
		{`"a=b c"`, []string{"a=b c"}},
		{`"a b=" x`, []string{"a b=", "x"}},
		{`"a="b""`, []string{`a=b"`}}, // a="b"" : only one trailing quote stripped
		{`"x`, []string{"x"}},
		{`"`, []string{""}},
		{`"" x`, []string{"", "x"}},
		{`""=x`, []string{`"=x`}},
		// Quotes elsewhere stay and still group white space.
		{`a"b c"d e`, []string{`a"b c"d`, "e"}},
		{`x=a"b`, []string{`x=a"b`}},
		{`foo"bar`, []string{`foo"bar`}},
		// '=' handling: first '=' after the first byte.
		{"a=b=c", []string{"a=b=c"}},
		{"=a=b =", []string{"=a=b", "="}},
		{"a= b", []string{"a=", "b"}},
		// NUL ends the command line.
		{"a b\x00c d", []string{"a", "b"}},
		// "--" is not special for Split.
		{"ro -- init-arg", []string{"ro", "--", "init-arg"}},
	} {
		got := Split(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in, name, value string
		has             bool
	}{
		{"root=/dev/sda", "root", "/dev/sda", true},
		{"ro", "ro", "", false},
		{"a=", "a", "", true},
		{"=x", "=x", "", false},
		{"=x=y", "=x", "y", true},
		{"a=b=c", "a", "b=c", true},
		{"=", "=", "", false},
		{"", "", "", false},
	} {
		n, v, h := Cut(tc.in)
		if n != tc.name || v != tc.value || h != tc.has {
			t.Errorf("Cut(%q) = %q, %q, %v; want %q, %q, %v", tc.in, n, v, h, tc.name, tc.value, tc.has)
		}
	}
}

func TestJoin(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"ro", "root=/dev/sda1"}, "ro root=/dev/sda1"},
		{[]string{"root=LABEL=my root"}, `root="LABEL=my root"`},
		{[]string{"a=b\tc"}, "a=\"b\tc\""},
		{[]string{"title=voil\xc3\xa0"}, "title=\"voil\xc3\xa0\""},
		{[]string{"a b"}, `"a b"`},
		{[]string{"a b=c d"}, `"a b=c d"`},
		{[]string{"a b="}, `"a b="`},
		{[]string{"=a b"}, `"=a b"`},
		{[]string{"=a=b c"}, `=a="b c"`},
		{[]string{"a="}, "a="},
		{[]string{"--", "x"}, "-- x"},
	} {
		got, err := Join(tc.args)
		if err != nil || got != tc.want {
			t.Errorf("Join(%q) = %q, %v; want %q", tc.args, got, err, tc.want)
			continue
		}
		if back := Split(got); !reflect.DeepEqual(back, tc.args) && !(len(back) == 0 && len(tc.args) == 0) {
			t.Errorf("Split(Join(%q)) = %q", tc.args, back)
		}
	}
	for _, bad := range [][]string{
		{"a", ""}, {`a="b"`}, {`a"b`}, {"a=b\nc"}, {"a=b\rc"}, {"a\x00"},
	} {
		_, err := Join(bad)
		var ie *InvalidError
		if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Join(%q) = %v, want *InvalidError", bad, err)
		}
	}
}

func TestGet(t *testing.T) {
	args := Split(`console=tty0 ro console=ttyS0,115200 root=/dev/sda quiet= root="LABEL=a b" =x cfs.tpm`)
	for _, tc := range []struct {
		name  string
		value string
		found bool
	}{
		{"console", "ttyS0,115200", true},
		{"root", "LABEL=a b", true}, // the last one wins
		{"ro", "", true},
		{"quiet", "", true},
		{"cfs.tpm", "", true},
		{"=x", "", true},
		{"rw", "", false},
		{"roo", "", false},
		{"console=tty0", "", false},
	} {
		v, ok := Get(args, tc.name)
		if v != tc.value || ok != tc.found {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.value, tc.found)
		}
		if Has(args, tc.name) != tc.found {
			t.Errorf("Has(%q) != %v", tc.name, tc.found)
		}
	}
	if got := GetAll(args, "console"); !reflect.DeepEqual(got, []string{"tty0", "ttyS0,115200"}) {
		t.Errorf("GetAll(console) = %q", got)
	}
	if got := GetAll(args, "nope"); got != nil {
		t.Errorf("GetAll(nope) = %q, want nil", got)
	}
}

func TestAppendSetDelete(t *testing.T) {
	base := []string{"root=/dev/sda", "console=tty0", "quiet", "console=ttyS0", "quiet="}
	orig := append([]string(nil), base...)
	join := func(a []string) string { return strings.Join(a, " ") }

	for _, tc := range []struct {
		op   string
		arg  string
		want string
		n    int // Delete: removed count
	}{
		{"append", "rw", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet= rw", 0},
		{"append", "console=tty0", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet=", 0}, // exact duplicate: no-op
		{"append", "console=ttyS1", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet= console=ttyS1", 0},
		{"append", "quiet", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet=", 0},
		{"append", "root=LABEL=a b", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet= root=LABEL=a b", 0},
		{"set", "console=hvc0", "root=/dev/sda console=hvc0 quiet quiet=", 0},
		{"set", "root=/dev/vda", "root=/dev/vda console=tty0 quiet console=ttyS0 quiet=", 0},
		{"set", "quiet", "root=/dev/sda console=tty0 quiet console=ttyS0", 0},
		{"set", "new=1", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet= new=1", 0},
		{"delete", "console", "root=/dev/sda quiet quiet=", 2},
		{"delete", "console=ttyS0", "root=/dev/sda console=tty0 quiet quiet=", 1},
		{"delete", "quiet", "root=/dev/sda console=tty0 console=ttyS0", 2},
		{"delete", "quiet=", "root=/dev/sda console=tty0 quiet console=ttyS0", 1},
		{"delete", "console=nope", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet=", 0},
		{"delete", "absent", "root=/dev/sda console=tty0 quiet console=ttyS0 quiet=", 0},
	} {
		var got []string
		var err error
		n := 0
		switch tc.op {
		case "append":
			got, err = Append(base, tc.arg)
		case "set":
			got, err = Set(base, tc.arg)
		case "delete":
			got, n = Delete(base, tc.arg)
		}
		if err != nil || join(got) != tc.want || n != tc.n {
			t.Errorf("%s(%q) = %q (removed %d), %v; want %q (removed %d)", tc.op, tc.arg, join(got), n, err, tc.want, tc.n)
		}
		if !reflect.DeepEqual(base, orig) {
			t.Fatalf("%s(%q) modified its input: %q", tc.op, tc.arg, base)
		}
	}
	for _, bad := range []string{"", `a="b"`, "a=\n"} {
		if _, err := Append(base, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Append(%q) = %v, want ErrInvalid", bad, err)
		}
		if _, err := Set(base, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Set(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
