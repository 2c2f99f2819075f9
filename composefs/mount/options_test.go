package mount

import (
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	d := strings.Repeat("ab", 32)
	o, err := ParseOptions(`basedir=/a:/b\:c,digest=` + d + `,verify=objects,ro,upperdir=/u\,x,workdir=/w`)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.BaseDirs) != 2 || o.BaseDirs[0] != "/a" || o.BaseDirs[1] != "/b:c" {
		t.Fatalf("basedirs %q", o.BaseDirs)
	}
	if o.ExpectedDigest == nil || o.ExpectedDigest.String() != d || o.Verify != VerifyObjects || o.Writable {
		t.Fatalf("parsed %+v", o)
	}
	if o.UpperDir != "/u,x" || o.WorkDir != "/w" {
		t.Fatalf("upper/work %q %q", o.UpperDir, o.WorkDir)
	}
	for _, bad := range []string{"", "digest=" + d, "basedir=/a,digest=xyz", "basedir=/a,verify=maybe", "basedir=/a,bogus", "basedir"} {
		if _, err := ParseOptions(bad); err == nil {
			t.Errorf("ParseOptions(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{},
		{BaseDirs: []string{""}},
		{BaseDirs: []string{"/o"}, UpperDir: "/u"},
		{BaseDirs: []string{"/o"}, Writable: true},
		{BaseDirs: []string{"/o"}, Verify: 9},
	} {
		if err := o.validate(); err == nil {
			t.Errorf("validate(%+v) accepted", o)
		}
	}
}

func TestLegacyOverlayData(t *testing.T) {
	o := Options{BaseDirs: []string{"/obj,1", "/o:2"}}
	got := legacyOverlayData("/m", o, true, true)
	want := `metacopy=on,redirect_dir=on,lowerdir=/m::/obj\,1::/o\:2,verity=require`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	o.UpperDir, o.WorkDir = "/u", "/w"
	if got := legacyOverlayData("/m", o, false, false); got != `metacopy=on,redirect_dir=on,lowerdir=/m:/obj\,1:/o\:2,upperdir=/u,workdir=/w` {
		t.Fatalf("got %s", got)
	}
}

func TestParseVerifyMode(t *testing.T) {
	for s, want := range map[string]VerifyMode{"kernel": VerifyKernel, "objects": VerifyObjects, "none": VerifyNone} {
		if m, err := ParseVerifyMode(s); err != nil || m != want || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseVerifyMode("yes"); err == nil {
		t.Error("accepted yes")
	}
}
