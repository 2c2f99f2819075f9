package testutil

import (
	"slices"
	"testing"
)

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:              "/plain",
		`/with\040space`:      "/with space",
		`/tab\011and\134back`: "/tab\tand\\back",
		`/nl\012`:             "/nl\n",
		`/short\04`:           `/short\04`,
		`/not\0xyoctal`:       `/not\0xyoctal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountPoints(t *testing.T) {
	mps := MountPoints(t)
	if !slices.Contains(mps, "/") {
		t.Fatalf("no root mount in %q", mps)
	}
	if !IsMountPoint(t, "/") || IsMountPoint(t, t.TempDir()) {
		t.Fatal("IsMountPoint wrong for / or a fresh temp dir")
	}
}
