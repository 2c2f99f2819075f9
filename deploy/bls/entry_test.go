package bls

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current Marshal output")

func parseString(t *testing.T, s string) *Entry {
	t.Helper()
	e, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("Parse: %v\ninput:\n%s", err, s)
	}
	return e
}

func TestParseSpecExample(t *testing.T) {
	f, err := os.Open("testdata/spec-example.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want := &Entry{
		Title:        "Fedora 19 (Rawhide)",
		Version:      "3.8.0-2.fc19.x86_64",
		MachineID:    "6a9857a393724b7a981ebb5b8495b9ea",
		SortKey:      "fedora",
		Linux:        "/6a9857a393724b7a981ebb5b8495b9ea/3.8.0-2.fc19.x86_64/linux",
		Initrd:       []string{"/6a9857a393724b7a981ebb5b8495b9ea/3.8.0-2.fc19.x86_64/initrd"},
		Options:      []string{"root=UUID=6d3376e4-fc93-4509-95ec-a21d68011da2 quiet"},
		Architecture: "x64",
	}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got  %#v\nwant %#v", e, want)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParseRepeatedAndUnknownKeys(t *testing.T) {
	e := parseString(t, readTestdata(t, "multi.conf"))
	if got, want := e.Initrd, []string{"/cfs/7/microcode.img", "/cfs/7/initramfs.img"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Initrd = %q, want %q", got, want)
	}
	wantOpts := []string{
		"root=PARTUUID=1b5b6ffa-01 ro",
		"composefs=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   cfs.tpm=if-present",
	}
	if !reflect.DeepEqual(e.Options, wantOpts) {
		t.Errorf("Options = %q, want %q (the empty options line is dropped, inner spacing kept)", e.Options, wantOpts)
	}
	if got, want := e.Cmdline(), wantOpts[0]+" "+wantOpts[1]; got != want {
		t.Errorf("Cmdline = %q, want %q", got, want)
	}
	wantExtra := []Field{
		{"devicetree-overlay", "/cfs/7/a.dtbo /cfs/7/b.dtbo"},
		{"grub_users", "$grub_users"},
		{"grub_arg", "--unrestricted"},
		{"grub_class", "kernel"},
		{"extra-flag", ""},
	}
	if !reflect.DeepEqual(e.Extra, wantExtra) {
		t.Errorf("Extra = %q, want %q", e.Extra, wantExtra)
	}
	if e.Devicetree != "/cfs/7/board.dtb" || e.SortKey != "cfs" || e.Title != "cfs 7" {
		t.Errorf("unexpected single keys: %#v", e)
	}
}

func TestParseLastSingleValueWins(t *testing.T) {
	e := parseString(t, "title one\nlinux /a\ntitle two\nlinux /b\n")
	if e.Title != "two" || e.Linux != "/b" {
		t.Fatalf("got title %q linux %q, want the last values (systemd behaviour)", e.Title, e.Linux)
	}
}

func TestParseCRLFAndTrailingSpace(t *testing.T) {
	e := parseString(t, readTestdata(t, "ostree-crlf.conf"))
	if e.Version != "2" || !strings.HasSuffix(e.Options[0], "root=UUID=4f0b3c4e") {
		t.Fatalf("CR not stripped: version %q options %q", e.Version, e.Options)
	}
	e = parseString(t, readTestdata(t, "kernel-install.conf"))
	if strings.HasSuffix(e.Options[0], " ") {
		t.Fatalf("trailing space kept in %q", e.Options[0])
	}
}

func TestParseErrors(t *testing.T) {
	long := "title " + strings.Repeat("x", MaxLineLength) + "\nlinux /a\n"
	huge := strings.Repeat("# padding padding padding padding padding padding\n", MaxEntrySize/40) + "linux /a\n"
	for _, tc := range []struct {
		name, in string
		line     int
		msg      string
	}{
		{"no linux or efi", "title x\nversion 1\n", 0, "neither a linux nor an efi"},
		{"empty file", "", 0, "neither a linux nor an efi"},
		{"only comments", "# linux /a\n", 0, "neither a linux nor an efi"},
		{"linux and efi", "linux /a\nefi /b.efi\n", 0, "both a linux and an efi"},
		{"machine-id uppercase", "linux /a\nmachine-id 6A9857A393724B7A981EBB5B8495B9EA\n", 2, "32 lowercase hex"},
		{"machine-id uuid form", "linux /a\n\nmachine-id 6a9857a3-9372-4b7a-981e-bb5b8495b9ea\n", 3, "32 lowercase hex"},
		{"machine-id short", "machine-id abc\nlinux /a\n", 1, "32 lowercase hex"},
		{"known key no value", "linux /a\ninitrd\n", 2, "no value"},
		{"title no value", "title   \t\nlinux /a\n", 1, "no value"},
		{"NUL", "linux /a\ntitle a\x00b\n", 2, "NUL"},
		{"bad UTF-8", "linux /a\ntitle \xff\xfe\n", 2, "UTF-8"},
		{"long line", long, 1, "longer than"},
		{"huge file", huge, 0, "larger than"},
		{"CR inside key", "linux /a\nfo\ro bar\n", 2, "white space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *Error", err)
			}
			if pe.Line != tc.line {
				t.Errorf("line %d, want %d (%v)", pe.Line, tc.line, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseIOError(t *testing.T) {
	_, err := Parse(failingReader{})
	if err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("got %v, want the wrapped I/O error, not ErrInvalid", err)
	}
}

func TestValidate(t *testing.T) {
	ok := func() *Entry { return &Entry{Title: "t", Linux: "/cfs/1/vmlinuz", Initrd: []string{"/cfs/1/initrd"}} }
	for _, tc := range []struct {
		name   string
		mutate func(e *Entry)
		msg    string // "" = valid
	}{
		{"minimal", func(e *Entry) {}, ""},
		{"relative path", func(e *Entry) { e.Linux = "cfs/1/vmlinuz" }, ""},
		{"efi only", func(e *Entry) { e.Linux, e.Initrd, e.EFI = "", nil, "/EFI/x.efi" }, ""},
		{"uki only", func(e *Entry) { e.Linux, e.Initrd, e.Extra = "", nil, []Field{{"uki", "/EFI/Linux/x.efi"}} }, ""},
		{"no payload", func(e *Entry) { e.Linux = "" }, "neither"},
		{"both", func(e *Entry) { e.EFI = "/x.efi" }, "both"},
		{"dotdot", func(e *Entry) { e.Linux = "/cfs/../vmlinuz" }, "not normalized"},
		{"dot", func(e *Entry) { e.Initrd[0] = "/cfs/./initrd" }, "not normalized"},
		{"double slash", func(e *Entry) { e.Devicetree = "/cfs//a.dtb" }, "not normalized"},
		{"newline in title", func(e *Entry) { e.Title = "a\nlinux /evil" }, "newline"},
		{"leading space", func(e *Entry) { e.Version = " 1" }, "white space"},
		{"trailing CR", func(e *Entry) { e.Options = []string{"quiet\r"} }, "white space"},
		{"empty options element", func(e *Entry) { e.Options = []string{""} }, "empty value"},
		{"empty initrd element", func(e *Entry) { e.Initrd = []string{""} }, "empty value"},
		{"machine-id", func(e *Entry) { e.MachineID = "xyz" }, "32 lowercase hex"},
		{"extra known key", func(e *Entry) { e.Extra = []Field{{"title", "x"}} }, "known key"},
		{"extra comment key", func(e *Entry) { e.Extra = []Field{{"#x", "y"}} }, "'#'"},
		{"extra key space", func(e *Entry) { e.Extra = []Field{{"a b", "y"}} }, "white space"},
		{"extra empty key", func(e *Entry) { e.Extra = []Field{{"", "y"}} }, "empty key"},
		{"invalid utf8", func(e *Entry) { e.SortKey = "\xff" }, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok()
			tc.mutate(e)
			err := e.Validate()
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				back, perr := Parse(bytes.NewReader(e.Marshal()))
				if perr != nil || !reflect.DeepEqual(back, e) {
					t.Fatalf("valid entry does not round-trip: %v\n%#v\n%#v", perr, back, e)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate = %v, want ErrInvalid mentioning %q", err, tc.msg)
			}
		})
	}
}

// TestMarshalGolden checks Marshal's fixed key order byte for byte and
// that every golden parses back to the same entry.
func TestMarshalGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.conf")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			e := parseString(t, readTestdata(t, filepath.Base(in)))
			got := e.Marshal()
			golden := strings.TrimSuffix(in, ".conf") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it, then review it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Marshal:\n%s\nwant:\n%s", got, want)
			}
			again := parseString(t, string(want))
			if !reflect.DeepEqual(again, e) {
				t.Fatalf("golden parses to %#v, want %#v", again, e)
			}
		})
	}
}

func TestMarshalOrder(t *testing.T) {
	e := &Entry{
		Extra: []Field{{"zz", "1"}, {"aa", ""}}, Options: []string{"b", "a"}, Architecture: "x64",
		Devicetree: "/d", EFI: "", Initrd: []string{"/i2", "/i1"}, Linux: "/l", SortKey: "s",
		MachineID: "0123456789abcdef0123456789abcdef", Version: "v", Title: "t",
	}
	want := "title t\nversion v\nmachine-id 0123456789abcdef0123456789abcdef\nsort-key s\nlinux /l\n" +
		"initrd /i2\ninitrd /i1\ndevicetree /d\narchitecture x64\noptions b\noptions a\nzz 1\naa\n"
	if got := string(e.Marshal()); got != want {
		t.Fatalf("Marshal:\n%s\nwant:\n%s", got, want)
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
