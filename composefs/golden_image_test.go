package composefs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
)

// goldenImageCheck writes the built tree with the EROFS writer and the
// variant's version options and compares the bytes with upstream's image
// and the fs-verity digest with upstream's --print-digest-only output.
func goldenImageCheck(t *testing.T, root *composefs.Node, v goldenVariant, dir string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(dir, v.image))
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, err := os.ReadFile(filepath.Join(dir, v.digest))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	d, err := erofs.Write(&buf, root, erofs.WriteOptions{MinVersion: v.minVersion, MaxVersion: v.maxVersion})
	if err != nil {
		t.Fatalf("erofs.Write: %v", err)
	}
	got := buf.Bytes()
	if !bytes.Equal(got, want) {
		off := 0
		for off < len(got) && off < len(want) && got[off] == want[off] {
			off++
		}
		t.Errorf("image differs from %s: %d bytes, want %d; first difference at offset %d (%#x)", v.image, len(got), len(want), off, off)
	}
	if d.String() != strings.TrimSpace(string(wantDigest)) {
		t.Errorf("image digest %s, want %s (%s)", d, strings.TrimSpace(string(wantDigest)), v.digest)
	}
}
