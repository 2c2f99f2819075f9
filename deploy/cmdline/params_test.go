package cmdline

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/commit"
)

const (
	hex64  = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hex128 = "ee26b0dd4af7e749aa1a8ee3c10ae9923f618980772e473f8819a5d4940e0db27ac185f8a0e1d5f84f88bc887fd67b143732c304cc5fa9ad8e6f57f50028a8ff"
)

func TestParseComposefs(t *testing.T) {
	for _, tc := range []struct {
		in       string
		alg      Algorithm
		optional bool
		hex      string
	}{
		{hex64, SHA256, false, hex64},
		{"?" + hex64, SHA256, true, hex64},
		{strings.ToUpper(hex64), SHA256, false, hex64},
		{hex128, SHA512, false, hex128},
		{"?" + hex128, SHA512, true, hex128},
	} {
		c, err := ParseComposefs(tc.in)
		if err != nil {
			t.Errorf("ParseComposefs(%q): %v", tc.in, err)
			continue
		}
		if c.Algorithm != tc.alg || c.Optional != tc.optional || c.Hex() != tc.hex {
			t.Errorf("ParseComposefs(%q) = %+v (hex %s)", tc.in, c, c.Hex())
		}
		wantStr := tc.hex
		if tc.optional {
			wantStr = "?" + wantStr
		}
		if c.String() != wantStr || c.Arg() != "composefs="+wantStr {
			t.Errorf("String/Arg = %q/%q", c.String(), c.Arg())
		}
		if (c.Algorithm == SHA256) == c.SHA256.IsZero() || (c.Algorithm == SHA512) == c.SHA512.IsZero() {
			t.Errorf("wrong digest field set: %+v", c)
		}
	}
	for _, bad := range []string{"", "?", "??" + hex64, hex64[:63], hex64 + "0", "g" + hex64[1:], " " + hex64, hex128[:127], "sha256:" + hex64} {
		if _, err := ParseComposefs(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseComposefs(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseDeployment(t *testing.T) {
	for _, ok := range []string{"/sysroot/cfs/deploy/default/1", "/a", "/a/...", "/a b/c"} {
		if got, err := ParseDeployment(ok); err != nil || got != ok {
			t.Errorf("ParseDeployment(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "/", "relative/path", "./a", "/a/../b", "/a/..", "/..", "/a/./b", "//a", "/a//b", "/a/", "/a\nb", "/a\x00"} {
		if _, err := ParseDeployment(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDeployment(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseTPM(t *testing.T) {
	for in, want := range map[string]TPMMode{"required": TPMRequired, "if-present": TPMIfPresent, "off": TPMOff} {
		if got, err := ParseTPM(in); err != nil || got != want {
			t.Errorf("ParseTPM(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "on", "Required", "if_present", "0"} {
		if _, err := ParseTPM(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTPM(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseCommit(t *testing.T) {
	id, err := ParseCommit(hex64)
	if err != nil || id.String() != hex64 {
		t.Fatalf("ParseCommit = %v, %v", id, err)
	}
	for _, bad := range []string{"", hex64[:63], strings.ToUpper(hex64), hex128, "z" + hex64[1:]} {
		if _, err := ParseCommit(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCommit(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseStateroot(t *testing.T) {
	for _, ok := range []string{"default", "fedora-coreos", "a", "A_b.c-1", strings.Repeat("x", 64)} {
		if got, err := ParseStateroot(ok); err != nil || got != ok {
			t.Errorf("ParseStateroot(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "-x", "a/b", "a b", "é", strings.Repeat("x", 65)} {
		if _, err := ParseStateroot(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseStateroot(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseRoot(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Root
	}{
		{"/dev/vda2", Root{RootPath, "/dev/vda2"}},
		{"UUID=4f0b3c4e-1111", Root{RootUUID, "4f0b3c4e-1111"}},
		{"PARTUUID=1b5b6ffa-01", Root{RootPartUUID, "1b5b6ffa-01"}},
		{"PARTUUID=1b5b6ffa-01/PARTNROFF=1", Root{RootPartUUID, "1b5b6ffa-01/PARTNROFF=1"}},
		{"LABEL=my root", Root{RootLabel, "my root"}},
		{"PARTLABEL=root-x86-64", Root{RootPartLabel, "root-x86-64"}},
		{"fd00", Root{RootOther, "fd00"}},
		{"gpt-auto", Root{RootOther, "gpt-auto"}},
	} {
		got, err := ParseRoot(tc.in)
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParseRoot(%q) = %+v (%q), %v; want %+v", tc.in, got, got.String(), err, tc.want)
		}
	}
	for _, bad := range []string{"", "UUID=", "LABEL=", "/dev/a\tb"} {
		if _, err := ParseRoot(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRoot(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseBoot(t *testing.T) {
	line := `BOOT_IMAGE=/vmlinuz root="LABEL=my root" rw composefs=?` + hex128 +
		` cfs.stateroot=default cfs.deployment=/cfs/deploy/default/3 cfs.commit=` + hex64 +
		` cfs.tpm=if-present quiet composefs=?` + hex128
	b, err := ParseBoot(Split(line))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := commit.ParseID(hex64)
	if b.Root == nil || *b.Root != (Root{RootLabel, "my root"}) ||
		b.Composefs == nil || !b.Composefs.Optional || b.Composefs.Algorithm != SHA512 || b.Composefs.Hex() != hex128 ||
		b.Stateroot != "default" || b.Deployment != "/cfs/deploy/default/3" ||
		b.Commit == nil || *b.Commit != id || b.TPM != TPMIfPresent {
		t.Fatalf("ParseBoot = %+v", b)
	}

	empty, err := ParseBoot(Split("ro quiet"))
	if err != nil || !reflect.DeepEqual(empty, &Boot{}) {
		t.Fatalf("ParseBoot without cfs parameters = %+v, %v", empty, err)
	}

	for _, bad := range []string{
		"composefs", // no value
		"composefs=" + hex64 + " composefs=?" + hex64, // differs (first vs last readers disagree)
		"cfs.commit=" + hex64 + " cfs.commit=" + strings.Repeat("0", 64),
		"cfs.tpm=maybe",
		"cfs.deployment=/a/../b",
		"cfs.stateroot=../x",
		"root=",
		"composefs=" + hex64[:10],
	} {
		if _, err := ParseBoot(Split(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseBoot(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestBootArgsRoundTrip(t *testing.T) {
	c, _ := ParseComposefs(hex64)
	id, _ := ParseCommit(hex64)
	b := &Boot{
		Root: &Root{RootLabel, "my root"}, Composefs: &c, Stateroot: "default",
		Deployment: "/cfs/deploy/default/3", Commit: &id, TPM: TPMRequired,
	}
	args, err := b.Args()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"root=LABEL=my root", "composefs=" + hex64, "cfs.stateroot=default",
		"cfs.deployment=/cfs/deploy/default/3", "cfs.commit=" + hex64, "cfs.tpm=required"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("Args = %q\nwant %q", args, want)
	}
	line, err := Join(args)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, `root="LABEL=my root" composefs=`) {
		t.Fatalf("Join = %q", line)
	}
	back, err := ParseBoot(Split(line))
	if err != nil || !reflect.DeepEqual(back, b) {
		t.Fatalf("ParseBoot(Join(Args)) = %+v, %v\nwant %+v", back, err, b)
	}

	for _, bad := range []*Boot{
		{Root: &Root{RootPath, "UUID=x"}},
		{Composefs: &Composefs{Algorithm: "md5"}},
		{Stateroot: "a/b"},
		{Deployment: "rel"},
		{TPM: "sometimes"},
	} {
		if _, err := bad.Args(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Args(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}
