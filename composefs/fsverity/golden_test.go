package fsverity

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// Every golden image's fs-verity digest equals what mkcomposefs printed
// (*.digest) and what fsverity-utils printed (image.fsverity).
func TestGoldenImageDigests(t *testing.T) {
	golden := testutil.GoldenDir(t)
	checked := 0
	for _, c := range testutil.GoldenCases(t) {
		dir := filepath.Join(golden, c)
		digests, err := filepath.Glob(filepath.Join(dir, "*.digest"))
		if err != nil {
			t.Fatal(err)
		}
		for _, df := range append(digests, filepath.Join(dir, "image.fsverity")) {
			img := strings.TrimSuffix(strings.TrimSuffix(df, ".digest"), ".fsverity") + ".cfs"
			wantText, err := os.ReadFile(df)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ParseDigest(strings.TrimSpace(string(wantText)))
			if err != nil {
				t.Fatalf("%s: %v", df, err)
			}
			got, size, err := DigestFile(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s (%d bytes): digest %s, %s says %s", img, size, got, filepath.Base(df), want)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("only %d golden image digests checked; golden data incomplete?", checked)
	}
}

// Every object of object-digests.txt is the digest of a regular file of
// more than 64 bytes in the case's tree.tar, and every such file has its
// line. The hugefile case (4 GiB) needs CFS_TEST_LONG=1.
func TestGoldenObjectDigests(t *testing.T) {
	golden := testutil.GoldenDir(t)
	total := 0
	for _, c := range testutil.GoldenCases(t) {
		listPath := filepath.Join(golden, c, "object-digests.txt")
		if _, err := os.Stat(listPath); errors.Is(err, os.ErrNotExist) {
			continue // dump cases have no tree
		}
		want := readObjectList(t, listPath)
		total += len(want)
		t.Run(c, func(t *testing.T) {
			if c == "hugefile" && !testutil.Long() {
				t.Skip("4 GiB file: set CFS_TEST_LONG=1")
			}
			got := digestTarObjects(t, filepath.Join(golden, c, "tree.tar"))
			for d, size := range want {
				if gs, ok := got[d]; !ok {
					t.Errorf("object %s (%d bytes) listed but no file in tree.tar has that digest", d, size)
				} else if gs != size {
					t.Errorf("object %s: tree.tar file has %d bytes, list says %d", d, gs, size)
				}
			}
			for d, size := range got {
				if _, ok := want[d]; !ok {
					t.Errorf("tree.tar file of %d bytes has digest %s, missing from object-digests.txt", size, d)
				}
			}
		})
	}
	if total < 30 {
		t.Fatalf("only %d golden objects listed; golden data incomplete?", total)
	}
}

func readObjectList(t *testing.T, path string) map[Digest]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[Digest]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		d, err := ParseDigest(fields[1])
		if err != nil {
			t.Fatal(err)
		}
		fromPath, err := ParseObjectPath(fields[0])
		if err != nil || fromPath != d || d.ObjectPath() != fields[0] {
			t.Fatalf("%s: path %s does not name digest %s (%v)", path, fields[0], d, err)
		}
		size, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out[d] = size
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// digestTarObjects digests every regular file of more than 64 bytes
// (mkcomposefs inlines smaller ones) in a tar archive, streaming.
func digestTarObjects(t *testing.T, path string) map[Digest]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[Digest]int64{}
	tr := tar.NewReader(f)
	h := NewHasher(SHA256)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size <= 64 {
			continue
		}
		h.Reset()
		n, err := h.ReadFrom(tr)
		if err != nil || n != hdr.Size {
			t.Fatalf("%s: read %d of %d bytes: %v", hdr.Name, n, hdr.Size, err)
		}
		out[h.Digest()] = n
	}
	return out
}
