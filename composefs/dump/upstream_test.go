package dump

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// openAsset returns the (decompressed) content of an upstream asset.
func readAsset(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer zr.Close()
		r = zr
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return data
}

// TestUpstreamAssetsParse: every dump upstream turns into an image (it has
// a .sha256) parses, validates, and survives Write → Parse → Write.
func TestUpstreamAssetsParse(t *testing.T) {
	dir := testutil.UpstreamAssetsDir(t)
	sums, err := filepath.Glob(filepath.Join(dir, "*.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) < 10 {
		t.Fatalf("only %d upstream assets with a .sha256", len(sums))
	}
	for _, sum := range sums {
		name := strings.TrimSuffix(filepath.Base(sum), ".sha256")
		t.Run(name, func(t *testing.T) {
			data := readAsset(t, filepath.Join(dir, name))
			root, err := Parse(bytes.NewReader(data), ParseOptions{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := root.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			var w1, w2 bytes.Buffer
			if err := Write(&w1, root); err != nil {
				t.Fatal(err)
			}
			again, err := Parse(bytes.NewReader(w1.Bytes()), ParseOptions{})
			if err != nil {
				t.Fatalf("Parse(Write(tree)): %v", err)
			}
			if err := Write(&w2, again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w1.Bytes(), w2.Bytes()) {
				t.Errorf("Write(Parse(Write(tree))) differs from Write(tree): %s", firstDiff(w2.String(), w1.String()))
			}
			// Canonical printing only reorders; the number of entries
			// stays the same.
			if got, want := bytes.Count(w1.Bytes(), []byte{'\n'}), bytes.Count(bytes.TrimRight(data, "\n"), []byte{'\n'})+1; got != want {
				t.Errorf("Write printed %d lines, input has %d", got, want)
			}
		})
	}
}

// TestUpstreamAssetsShouldFail: every should-fail dump is rejected, for the
// reason upstream rejects it. too-big is the one upstream only refuses
// when writing the image (EFBIG from lcfs_node_validate): Parse accepts
// it and Validate refuses it.
func TestUpstreamAssetsShouldFail(t *testing.T) {
	dir := testutil.UpstreamAssetsDir(t)
	want := map[string]struct {
		line      int    // 0: Parse succeeds, Validate must fail
		syntax    bool   // a *SyntaxError rather than a *LineError
		substring string // in the error message
	}{
		"should-fail-big-inline.dump":           {2, false, "inline content of 5004 bytes is larger than 5000"},
		"should-fail-dir-hardlink.dump":         {2, false, "directories cannot be hardlinked"},
		"should-fail-dot-name.dump":             {2, false, `"." is not a valid name`},
		"should-fail-dotdot-name.dump":          {2, false, `".." is not a valid name`},
		"should-fail-empty-link-name.dump":      {2, false, "symlink without a target"},
		"should-fail-empty-name.dump":           {2, false, "empty name"},
		"should-fail-empty-xattr-key.dump":      {2, false, "empty xattr name"},
		"should-fail-honggfuzz-long-xattr.dump": {1, false, "xattrs take 34493 bytes, more than the 32767 an inode can hold"},
		"should-fail-long-link.dump":            {2, false, "symlink target of 7248 bytes is longer than 4095"},
		"should-fail-long-xattr-key.dump":       {2, false, "too many xattrs"},
		"should-fail-long-xattr-value.dump":     {2, false, "mode 644 has no valid file type"},
		"should-fail-no-ftype.dump":             {2, false, "mode 0 has no valid file type"},
		"should-fail-self-hardlink.dump":        {2, false, "hardlink to itself"},
		"should-fail-too-big.dump":              {0, false, "file size 9500000000000000 is larger than"},
	}
	files, err := filepath.Glob(filepath.Join(dir, "should-fail-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("found %d should-fail assets, the table has %d", len(files), len(want))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			root, err := Parse(bytes.NewReader(readAsset(t, path)), ParseOptions{})
			if w.line == 0 {
				if err != nil {
					t.Fatalf("Parse: %v (upstream only rejects this when writing)", err)
				}
				err = root.Validate()
				if err == nil {
					t.Fatal("Validate accepted it")
				}
			} else {
				if err == nil {
					t.Fatal("Parse accepted it")
				}
				var se *SyntaxError
				var le *LineError
				switch {
				case errors.As(err, &se):
					if !w.syntax || se.Line != w.line {
						t.Errorf("got %T at line %d, want syntax=%v at line %d: %v", err, se.Line, w.syntax, w.line, err)
					}
				case errors.As(err, &le):
					if w.syntax || le.Line != w.line {
						t.Errorf("got %T at line %d, want syntax=%v at line %d: %v", err, le.Line, w.syntax, w.line, err)
					}
				default:
					t.Errorf("error of type %T: %v", err, err)
				}
			}
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) is false for %v", err)
			}
			if !strings.Contains(err.Error(), w.substring) {
				t.Errorf("error %q does not contain %q", clip(err.Error()), w.substring)
			}
			t.Logf("rejected: %s", clip(err.Error()))
		})
	}
}
