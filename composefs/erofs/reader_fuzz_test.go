package erofs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
)

// rdFuzzSeedMax bounds the golden images used as fuzz seeds: the mutator
// is more effective on small inputs.
const rdFuzzSeedMax = 32 << 10

// FuzzRead feeds arbitrary bytes to Read and Objects: they must never
// panic or hang, every failure must be a *FormatError (the input is in
// memory, so there are no I/O errors), and an accepted image must give a
// valid tree whose payloads Objects lists, that the dump printer prints,
// and that survives Write → Read unchanged up to what the format
// recomputes.
func FuzzRead(f *testing.F) {
	for _, g := range rdGoldenImages(f) {
		img, err := os.ReadFile(g.path)
		if err != nil {
			f.Fatal(err)
		}
		if len(img) <= rdFuzzSeedMax {
			f.Add(img)
		}
	}
	c := rdNewCraft(2)
	c.dir(36, 36, rdEnt{"a", 44, FtDir}, rdEnt{"f", 52, FtRegular}, rdEnt{"l", 60, FtSymlink})
	c.dir(44, 36, rdEnt{"h", 52, FtRegular})
	c.file(52, "content")
	copy(c.buf[c.inode(60, composefs.TypeSymlink|0o777, 1, LayoutFlatInline, 0):], "f")
	f.Add(c.bytes())

	f.Fuzz(func(t *testing.T, img []byte) {
		root, err := Read(bytes.NewReader(img), int64(len(img)))
		objs, oerr := Objects(bytes.NewReader(img), int64(len(img)))
		if oerr != nil {
			var fe *FormatError
			if !errors.As(oerr, &fe) {
				t.Fatalf("Objects: error is not a *FormatError: %v", oerr)
			}
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported)) {
				t.Fatalf("Read: error is not a classified *FormatError: %v", err)
			}
			return
		}
		if err := root.Validate(); err != nil {
			t.Fatalf("Read accepted an image giving an invalid tree: %v", err)
		}
		if oerr != nil {
			t.Fatalf("Read accepted the image but Objects failed: %v", oerr)
		}
		var payloads []string
		_ = root.Walk(func(_ string, n *composefs.Node) error {
			if n.Link == nil && n.IsRegular() && n.Payload != "" {
				payloads = append(payloads, n.Payload)
			}
			return nil
		})
		slices.Sort(payloads)
		payloads = slices.Compact(payloads)
		if !slices.Equal(objs, payloads) {
			t.Fatalf("Objects = %q, tree payloads = %q", objs, payloads)
		}
		if err := dump.Write(io.Discard, root); err != nil {
			t.Fatalf("dump.Write: %v", err)
		}

		// Writing the tree back and reading it again gives the same tree,
		// up to what the format recomputes (see rtExpected).
		var img2 bytes.Buffer
		if _, err := Write(&img2, root, DefaultWriteOptions()); err != nil {
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Fatalf("Write of a tree read from an image: unexpected error class: %v", err)
			}
			return
		}
		back, err := Read(bytes.NewReader(img2.Bytes()), int64(img2.Len()))
		if err != nil {
			t.Fatalf("reading the image Write made from the tree: %v", err)
		}
		got, want := rtDescribe(back), rtDescribe(rtExpected(root))
		if !slices.Equal(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("write → read changed entry %d:\n got: %.500s\nwant: %.500s", i, got[i], want[i])
				}
			}
			t.Fatalf("write → read: %d entries, want %d", len(got), len(want))
		}
	})
}
