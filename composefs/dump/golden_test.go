package dump

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/internal/testutil"
)

func parseFile(t *testing.T, path string) *composefs.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, err := Parse(f, ParseOptions{})
	if err != nil {
		t.Fatalf("Parse(%s): %v", path, err)
	}
	return root
}

func writeString(t *testing.T, fn func(*bytes.Buffer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := fn(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// firstDiff describes where two texts start to differ, line-wise.
func firstDiff(got, want string) string {
	g, w := strings.SplitAfter(got, "\n"), strings.SplitAfter(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %q\nwant: %q", i+1, clip(gl), clip(wl))
		}
	}
	return "no difference"
}

// TestGoldenDumps parses every composefs-info dump of the golden images and
// prints it back: composefs-info output is canonical, so Write must give
// the same bytes. ls.txt and objects.txt must match the image.dump tree.
func TestGoldenDumps(t *testing.T) {
	dir := testutil.GoldenDir(t)
	cases := testutil.GoldenCases(t)
	if len(cases) == 0 {
		t.Fatal("no golden cases")
	}
	nDumps := 0
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			dumps, err := filepath.Glob(filepath.Join(dir, c, "image*.dump"))
			if err != nil {
				t.Fatal(err)
			}
			if len(dumps) == 0 {
				t.Fatalf("no image*.dump in %s", c)
			}
			for _, d := range dumps {
				nDumps++
				want, err := os.ReadFile(d)
				if err != nil {
					t.Fatal(err)
				}
				root := parseFile(t, d)
				if err := root.Validate(); err != nil {
					t.Errorf("%s: Validate: %v", filepath.Base(d), err)
				}
				got := writeString(t, func(b *bytes.Buffer) error { return Write(b, root) })
				if got != string(want) {
					t.Errorf("%s: Write differs from composefs-info dump at %s", filepath.Base(d), firstDiff(got, string(want)))
				}
			}

			root := parseFile(t, filepath.Join(dir, c, "image.dump"))
			for _, x := range []struct {
				file  string
				write func(*bytes.Buffer) error
			}{
				{"ls.txt", func(b *bytes.Buffer) error { return WriteLs(b, root) }},
				{"objects.txt", func(b *bytes.Buffer) error { return WriteObjects(b, root) }},
			} {
				want, err := os.ReadFile(filepath.Join(dir, c, x.file))
				if err != nil {
					t.Fatal(err)
				}
				if got := writeString(t, x.write); got != string(want) {
					t.Errorf("%s differs: %s", x.file, firstDiff(got, string(want)))
				}
			}
		})
	}
	if nDumps < len(cases) {
		t.Errorf("checked %d dumps for %d cases", nDumps, len(cases))
	}
}

// TestGoldenObjectsMatchDigests cross-checks Objects with the object store
// listing of the directory cases: every stored object is referenced.
func TestGoldenObjectsMatchDigests(t *testing.T) {
	dir := testutil.GoldenDir(t)
	checked := 0
	for _, c := range testutil.GoldenCases(t) {
		data, err := os.ReadFile(filepath.Join(dir, c, "object-digests.txt"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var stored []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if l != "" {
				stored = append(stored, strings.Fields(l)[0])
			}
		}
		slices.Sort(stored)
		got := Objects(parseFile(t, filepath.Join(dir, c, "image.dump")))
		if !slices.Equal(got, stored) {
			t.Errorf("%s: Objects = %v, object store holds %v", c, got, stored)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no case with object-digests.txt")
	}
}
