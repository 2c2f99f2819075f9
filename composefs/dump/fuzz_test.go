package dump

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// FuzzParse: Parse never panics and stays within its line bound; what it
// accepts, Write prints canonically: Parse(Write(tree)) prints the same
// text again. Seeds: the golden dumps and the small upstream assets
// (testdata/fuzz/FuzzParse holds regression inputs).
func FuzzParse(f *testing.F) {
	for _, c := range testutil.GoldenCases(f) {
		files, _ := filepath.Glob(filepath.Join(testutil.GoldenDir(f), c, "*.dump"))
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil && len(data) <= 64<<10 {
				f.Add(data)
			}
		}
	}
	assets, _ := filepath.Glob(filepath.Join(testutil.UpstreamAssetsDir(f), "*.dump"))
	for _, p := range assets {
		if data, err := os.ReadFile(p); err == nil && len(data) <= 64<<10 {
			f.Add(data)
		}
	}
	f.Add([]byte(rootLine + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 3 100644 2 0 0 0 0.0 - abc -\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		const maxLine = 1 << 16
		root, err := Parse(bytes.NewReader(data), ParseOptions{MaxLineLen: maxLine})
		strictRoot, strictErr := Parse(bytes.NewReader(data), ParseOptions{Strict: true, MaxLineLen: maxLine})
		if strictErr == nil && err != nil {
			t.Fatalf("strict mode accepted what the default refused: %v", err)
		}
		if err != nil {
			return
		}
		_ = root.Validate()
		var w1 bytes.Buffer
		if err := Write(&w1, root); err != nil {
			t.Fatal(err)
		}
		if strictErr == nil {
			var ws bytes.Buffer
			if err := Write(&ws, strictRoot); err != nil {
				t.Fatal(err)
			}
			if ws.String() != w1.String() {
				t.Fatalf("strict and default parses differ: %s", firstDiff(ws.String(), w1.String()))
			}
		}
		if err := WriteLs(&bytes.Buffer{}, root); err != nil {
			t.Fatal(err)
		}
		_ = Objects(root)

		again, err := Parse(bytes.NewReader(w1.Bytes()), ParseOptions{MaxLineLen: 4 * maxLine})
		if err != nil {
			// Escaping can make the xattr text of a line longer than
			// the 65535 bytes upstream accepts (raw bytes ≥ 0x80 take 4
			// bytes each once printed): upstream has the same limit.
			if strings.Contains(err.Error(), "too many xattrs") {
				return
			}
			t.Fatalf("Parse(Write(tree)): %v\nprinted:\n%s", err, clip(w1.String()))
		}
		var w2 bytes.Buffer
		if err := Write(&w2, again); err != nil {
			t.Fatal(err)
		}
		if w1.String() != w2.String() {
			t.Fatalf("Write(Parse(Write(tree))) differs from Write(tree): %s", firstDiff(w2.String(), w1.String()))
		}
	})
}
