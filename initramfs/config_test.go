package initramfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/deploy/cmdline"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte("# comment\n\nverity = objects\n tpm=if-present \nthreshold = 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c != (Config{Verity: VerityObjects, TPM: cmdline.TPMIfPresent, Threshold: 2}) {
		t.Fatalf("got %+v", c)
	}
	back, err := ParseConfig(c.Marshal())
	if err != nil || back != c {
		t.Fatalf("Marshal round trip: %+v %v", back, err)
	}
	if c, err := ParseConfig(nil); err != nil || c != DefaultConfig() {
		t.Fatalf("empty file: %+v %v", c, err)
	}
	if DefaultConfig().Verity != VerityRequire || DefaultConfig().TPM != cmdline.TPMRequired {
		t.Fatal("the defaults must be the strict ones")
	}
	for _, bad := range []string{
		"verity = maybe\n", "tpm = sometimes\n", "threshold = 0\n", "threshold = 01\n", "threshold = x\n",
		"verity = objects\nverity = none\n", "colour = blue\n", "verity\n",
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoadConfigMissingIsDefault(t *testing.T) {
	c, err := LoadConfig(filepath.Join(t.TempDir(), "none.conf"))
	if err != nil || c != DefaultConfig() {
		t.Fatalf("%+v %v", c, err)
	}
	p := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(p, []byte("tpm = maybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "bad.conf") {
		t.Fatalf("bad file: %v", err)
	}
}

// The kernel command line can make the policy stricter, never weaker.
func TestEffectiveOnlyStricter(t *testing.T) {
	loose := Config{Verity: VerityNone, TPM: cmdline.TPMOff, Threshold: 1}
	strict := DefaultConfig()
	cases := []struct {
		base    Config
		cmdline string
		verity  Verity
		tpm     cmdline.TPMMode
	}{
		{loose, "", VerityNone, cmdline.TPMOff},
		{loose, "cfs.tpm=if-present cfs.verity=objects", VerityObjects, cmdline.TPMIfPresent},
		{loose, "cfs.tpm=required cfs.verity=require", VerityRequire, cmdline.TPMRequired},
		{strict, "cfs.tpm=off cfs.verity=none", VerityRequire, cmdline.TPMRequired},
		{strict, "composefs=?" + strings.Repeat("a", 64), VerityRequire, cmdline.TPMRequired},
		{Config{Verity: VerityObjects, TPM: cmdline.TPMIfPresent, Threshold: 1}, "cfs.verity=none cfs.tpm=off", VerityObjects, cmdline.TPMIfPresent},
	}
	for _, c := range cases {
		got, err := c.base.Effective(cmdline.Split(c.cmdline))
		if err != nil {
			t.Fatalf("%q: %v", c.cmdline, err)
		}
		if got.Verity != c.verity || got.TPM != c.tpm || got.Threshold != c.base.Threshold {
			t.Errorf("%+v with %q: got %+v", c.base, c.cmdline, got)
		}
	}
	for _, bad := range []string{"cfs.tpm=maybe", "cfs.verity=sometimes"} {
		_, err := strict.Effective(cmdline.Split(bad))
		if !errors.Is(err, cmdline.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckErrorMessage(t *testing.T) {
	e := &CheckError{Check: CheckImage, Deployment: "/cfs/deploy/os/deploy/x.0", Expected: "a", Actual: "b", Err: errors.New("why")}
	want := "image digest check failed for deployment /cfs/deploy/os/deploy/x.0: expected a, actual b: why"
	if e.Error() != want {
		t.Fatalf("%q, want %q", e.Error(), want)
	}
	if !errors.Is(e, ErrCheck) {
		t.Fatal("not ErrCheck")
	}
}
