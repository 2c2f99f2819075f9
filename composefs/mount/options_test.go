package mount

import (
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	d := strings.Repeat("ab", 32)
	o, err := ParseOptions(`basedir=/a:/b\:c:/d\,e,digest=` + d + `,verify=objects,rw,upperdir=/u\,x,workdir=/w\\y`)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.BaseDirs, "|") != `/a|/b:c|/d,e` {
		t.Errorf("basedirs %q", o.BaseDirs)
	}
	if o.ExpectedDigest == nil || o.ExpectedDigest.String() != d {
		t.Errorf("digest %v", o.ExpectedDigest)
	}
	if o.Verify != VerifyObjects || !o.Writable {
		t.Errorf("verify %v writable %v", o.Verify, o.Writable)
	}
	if o.UpperDir != "/u,x" || o.WorkDir != `/w\y` {
		t.Errorf("upper/work %q %q", o.UpperDir, o.WorkDir)
	}
}

func TestParseOptionsDefaults(t *testing.T) {
	for _, tc := range []struct {
		in       string
		verify   VerifyMode
		writable bool
	}{
		{"basedir=/o", VerifyKernel, false},
		// mount(8) passes rw by default: without an upper dir the
		// mount stays read-only.
		{"rw,basedir=/o", VerifyKernel, false},
		{"basedir=/o,verify=none,verity", VerifyKernel, false},
		{"basedir=/o,verify=none", VerifyNone, false},
		{"basedir=/o,upperdir=/u,workdir=/w", VerifyKernel, false},
		{"basedir=/o,upperdir=/u,workdir=/w,rw", VerifyKernel, true},
		{"basedir=/o,upperdir=/u,workdir=/w,rw,ro", VerifyKernel, false},
		{",,basedir=/o,", VerifyKernel, false},
	} {
		o, err := ParseOptions(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if o.Verify != tc.verify || o.Writable != tc.writable || len(o.BaseDirs) != 1 || o.BaseDirs[0] != "/o" {
			t.Errorf("%s: got %+v", tc.in, o)
		}
	}
}

func TestParseOptionsErrors(t *testing.T) {
	d := strings.Repeat("ab", 32)
	for _, tc := range []struct{ in, want string }{
		{"", "basedir"},
		{"digest=" + d, "basedir"},
		{"basedir", "needs a value"},
		{"basedir=", "needs a value"},
		{"basedir=/a::/b", "empty directory"},
		{"basedir=/a,digest=xyz", "digest"},
		{"basedir=/a,digest", "needs a value"},
		{"basedir=/a,verify=maybe", "verify"},
		{"basedir=/a,bogus", `unsupported mount option "bogus"`},
		{"basedir=/a,noacl=1", "unsupported"},
		{"basedir=/a,upperdir=/u", "upperdir and workdir"},
		{"basedir=/a,workdir=/w", "upperdir and workdir"},
	} {
		_, err := ParseOptions(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseOptions(%q) = %v, want an error about %q", tc.in, err, tc.want)
		}
	}
}

func TestSplitEscaped(t *testing.T) {
	for in, want := range map[string]string{
		`a,b`:      "a|b",
		`a\,b,c`:   `a\,b|c`,
		`a\\,b`:    `a\\|b`,
		`,`:        "|",
		`trail\`:   `trail\`,
		`x\\\,y,z`: `x\\\,y|z`,
	} {
		if got := strings.Join(splitEscaped(in, ','), "|"); got != want {
			t.Errorf("splitEscaped(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{`a\,b`: "a,b", `a\\b`: `a\b`, `plain`: "plain", `end\`: `end\`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{},
		{BaseDirs: []string{""}},
		{BaseDirs: []string{"/o"}, UpperDir: "/u"},
		{BaseDirs: []string{"/o"}, WorkDir: "/w"},
		{BaseDirs: []string{"/o"}, Writable: true},
		{BaseDirs: []string{"/o"}, Verify: 9},
	} {
		if err := o.validate(); err == nil {
			t.Errorf("validate(%+v) accepted", o)
		}
	}
	if err := (&Options{BaseDirs: []string{"/o"}, UpperDir: "/u", WorkDir: "/w", Writable: true}).validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func TestParseVerifyMode(t *testing.T) {
	for s, want := range map[string]VerifyMode{"kernel": VerifyKernel, "objects": VerifyObjects, "none": VerifyNone} {
		if m, err := ParseVerifyMode(s); err != nil || m != want || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	for _, bad := range []string{"", "yes", "Kernel"} {
		if _, err := ParseVerifyMode(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
