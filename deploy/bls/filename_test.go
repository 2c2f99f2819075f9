package bls

import (
	"errors"
	"strings"
	"testing"
)

// Vectors from systemd's test-bootspec.c (bootspec_extract_tries), adapted
// to the ".conf" suffix this package requires.
func TestParseFileName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Name
		err  bool
	}{
		{in: "foo.conf", want: Name{Base: "foo"}},
		{in: "foo+0.conf", want: Name{Base: "foo", Left: 0, HasCounter: true}},
		{in: "foo+1.conf", want: Name{Base: "foo", Left: 1, HasCounter: true}},
		{in: "foo+33.conf", want: Name{Base: "foo", Left: 33, HasCounter: true}},
		{in: "foo+2147483647.conf", want: Name{Base: "foo", Left: 2147483647, HasCounter: true}},
		{in: "foo+2147483648.conf", err: true},
		{in: "foo+99999999999999999999.conf", err: true},
		{in: "foo+33-0.conf", want: Name{Base: "foo", Left: 33, Done: 0, HasCounter: true}},
		{in: "foo+33-107.conf", want: Name{Base: "foo", Left: 33, Done: 107, HasCounter: true}},
		{in: "foo+33-2147483647.conf", want: Name{Base: "foo", Left: 33, Done: 2147483647, HasCounter: true}},
		{in: "foo+33-2147483648.conf", err: true},
		{in: "foo+007-000008.conf", want: Name{Base: "foo", Left: 7, Done: 8, HasCounter: true}},
		{in: "foo-1.conf", want: Name{Base: "foo-1"}},
		{in: "foo-999.conf", want: Name{Base: "foo-999"}},
		{in: "foo-.conf", want: Name{Base: "foo-"}},
		{in: "foo+.conf", want: Name{Base: "foo+"}},
		{in: "+.conf", want: Name{Base: "+"}},
		{in: "-.conf", want: Name{Base: "-"}},
		{in: "+1.conf", want: Name{Base: "", Left: 1, HasCounter: true}},
		{in: "some+name+24324-22.conf", want: Name{Base: "some+name", Left: 24324, Done: 22, HasCounter: true}},
		{in: "sels+2-3+7-6.conf", want: Name{Base: "sels+2-3", Left: 7, Done: 6, HasCounter: true}},
		{in: "ses.sgesge.+4-1.conf", want: Name{Base: "ses.sgesge.", Left: 4, Done: 1, HasCounter: true}},
		{in: "abc+0x4.conf", want: Name{Base: "abc+0x4"}},
		{in: "def+1-0x3.conf", want: Name{Base: "def+1-0x3"}},
		{in: "foo+1-2-3.conf", want: Name{Base: "foo+1-2-3"}},
		{in: "cfs-2+3-1.conf", want: Name{Base: "cfs-2", Left: 3, Done: 1, HasCounter: true}},
		{in: "CFS-2+3.CONF", want: Name{Base: "CFS-2", Left: 3, HasCounter: true}},
		{in: "foo+3.efi", err: true},
		{in: "conf", err: true},
		{in: "", err: true},
	} {
		got, err := ParseFileName(tc.in)
		if tc.err {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseFileName(%q) = %+v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseFileName(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestBootCountingLifecycle follows one entry through the renames of
// https://systemd.io/AUTOMATIC_BOOT_ASSESSMENT: three failed attempts make
// it bad; blessing removes the counter.
func TestBootCountingLifecycle(t *testing.T) {
	n, err := ParseFileName(FileName("cfs-5", 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for i := 0; i < 5; i++ {
		seen = append(seen, n.String())
		if n.Bad() == n.Indeterminate() || n.Blessed() {
			t.Fatalf("%s: bad=%v indeterminate=%v blessed=%v", n, n.Bad(), n.Indeterminate(), n.Blessed())
		}
		n = n.AfterAttempt()
	}
	want := "cfs-5+3.conf cfs-5+2-1.conf cfs-5+1-2.conf cfs-5+0-3.conf cfs-5+0-4.conf"
	if got := strings.Join(seen, " "); got != want {
		t.Fatalf("attempts: %s\nwant      %s", got, want)
	}
	if !n.Bad() {
		t.Fatal("entry with no tries left is not bad")
	}
	if got := n.BlessedName(); got != "cfs-5.conf" {
		t.Fatalf("BlessedName = %q", got)
	}
	if got := n.BadName(); got != "cfs-5+0-5.conf" {
		t.Fatalf("BadName = %q", got)
	}
	g, _ := ParseFileName(n.BlessedName())
	if !g.Blessed() || g.Bad() || g.Indeterminate() || g.AfterAttempt() != g {
		t.Fatalf("blessed name %+v has a counter", g)
	}
	fresh, _ := ParseFileName("cfs-6+2.conf")
	if got := fresh.BadName(); got != "cfs-6+0.conf" {
		t.Fatalf("BadName without done counter = %q, want cfs-6+0.conf (systemd-bless-boot make_bad)", got)
	}
}

func TestFileNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		base        string
		left, done  int
		want        string
		hasDoneForm bool
	}{
		{"cfs-1", 3, 0, "cfs-1+3.conf", false},
		{"cfs-1", 2, 1, "cfs-1+2-1.conf", true},
		{"cfs-1", 0, 3, "cfs-1+0-3.conf", true},
	} {
		got := FileName(tc.base, tc.left, tc.done)
		if got != tc.want {
			t.Errorf("FileName = %q, want %q", got, tc.want)
		}
		n, err := ParseFileName(got)
		if err != nil || n != (Name{Base: tc.base, Left: tc.left, Done: tc.done, HasCounter: true}) {
			t.Errorf("ParseFileName(%q) = %+v, %v", got, n, err)
		}
		if err := ValidFileName(got); err != nil {
			t.Errorf("ValidFileName(%q): %v", got, err)
		}
	}
}

func TestValidFileName(t *testing.T) {
	for _, ok := range []string{"cfs-1.conf", "a.conf", "6a9857a393724b7a981ebb5b8495b9ea-3.8.0-2.fc19.x86_64.conf", "A_b+1-2.conf"} {
		if err := ValidFileName(ok); err != nil {
			t.Errorf("ValidFileName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".conf", ".hidden.conf", "a b.conf", "a/b.conf", "a.txt", "é.conf",
		strings.Repeat("a", 251) + ".conf", "a+2147483648.conf", "a.CONF.bak"} {
		if err := ValidFileName(bad); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidFileName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := ValidFileName(strings.Repeat("a", 250) + ".conf"); err != nil {
		t.Errorf("255-byte name refused: %v", err)
	}
}
