package erofs

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// FuzzWrite writes every tree the dump parser accepts. Write must either
// reject it with an ErrInvalid error or produce an image whose returned
// digest is right and which the reader accepts; after one round trip
// through the reader (which may move hardlink primaries and drops what
// the image cannot carry), writing is a fixed point.
func FuzzWrite(f *testing.F) {
	for _, seed := range []string{
		"/ 4096 40755 2 0 0 0 1700000000.0 - - -\n",
		"/ 4096 40755 2 0 0 0 1.0 - - - trusted.overlay.opaque=y user.a=b\n" +
			"/d 4096 40755 2 0 0 0 1.0 - - -\n" +
			"/d/wo 0 20000 1 0 0 0 1.0 - - -\n" +
			"/f 100 100644 1 0 0 0 1.0 ab/cdef - abababababababababababababababababababababababababababababababab\n" +
			"/h 100 @100644 1 0 0 0 1.0 /f - -\n" +
			"/s 3 120777 1 0 0 0 2.5 abc - -\n" +
			"/i 5 100644 1 0 0 0 1.0 - hello - security.selinux=x\n",
		"/ 4096 40755 2 0 0 0 0.0 - - -\n/big 9000000000000000 100644 5 100000 70000 0 5000000000.999999999 - - -\n",
		"/ 4096 40755 2 0 0 0 0.0 - - -\n/c 7 20644 1 0 0 77 0.0 - - -\n/00 0 10644 1 0 0 0 0.0 - - -\n/ab 0 140644 1 0 0 0 0.0 - - -\n",
		"/ 4096 40755 2 0 0 0 0.0 - - -\n/l 4095 120777 1 0 0 0 0.0 " + strings.Repeat("t", 4095) + " - -\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := dump.Parse(bytes.NewReader(data), dump.ParseOptions{})
		if err != nil {
			return
		}
		var img1 bytes.Buffer
		d, err := Write(&img1, root, DefaultWriteOptions())
		if err != nil {
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Fatalf("Write error %v does not match composefs.ErrInvalid", err)
			}
			return
		}
		if d != fsverity.DigestBytes(img1.Bytes()) {
			t.Fatal("returned digest is not the digest of the image")
		}
		if img1.Len()%BlockSize != 0 {
			t.Fatalf("image size %d is not a multiple of the block size", img1.Len())
		}
		img2 := wtFuzzRoundTrip(t, img1.Bytes())
		img3 := wtFuzzRoundTrip(t, img2)
		if !bytes.Equal(img2, img3) {
			t.Fatal("writing the read-back tree is not a fixed point")
		}
	})
}

// wtFuzzRoundTrip reads an image and writes the tree again.
func wtFuzzRoundTrip(t *testing.T, img []byte) []byte {
	t.Helper()
	tree, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("reading a written image: %v", err)
	}
	var out bytes.Buffer
	if _, err := Write(&out, tree, DefaultWriteOptions()); err != nil {
		t.Fatalf("writing a read-back tree: %v", err)
	}
	return out.Bytes()
}
