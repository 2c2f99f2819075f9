package erofs_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// wtVariant is one image of a golden case: the dump to write, the options
// and the expected image (and digest, when upstream printed one).
type wtVariant struct {
	name   string
	dump   string // file name in the case directory
	image  string
	digest string // "" when there is no digest file
	opts   erofs.WriteOptions
}

var wtVersionFlag = regexp.MustCompile(`--(min|max)-version=(\d+)`)

// wtOptionsFromCommand derives the writer options from a mkcomposefs
// command line: the version flags, with mkcomposefs's rule that giving one
// of them makes the other default to 0. Other flags (--use-epoch,
// --skip-*) only change the tree, which the variant's dump already holds.
func wtOptionsFromCommand(t *testing.T, cmd string) erofs.WriteOptions {
	t.Helper()
	m := wtVersionFlag.FindAllStringSubmatch(cmd, -1)
	if len(m) == 0 {
		return erofs.DefaultWriteOptions()
	}
	var o erofs.WriteOptions
	for _, f := range m {
		v, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatal(err)
		}
		if f[1] == "min" {
			o.MinVersion = v
		} else {
			o.MaxVersion = v
		}
	}
	return o
}

// wtGoldenVariants reads a case's commands.txt.
func wtGoldenVariants(t *testing.T, dir string) []wtVariant {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "commands.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []wtVariant
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name, cmd, ok := strings.Cut(line, "|")
		if !ok {
			t.Fatalf("commands.txt: bad line %q", line)
		}
		if strings.Contains(cmd, "--print-digest-only") {
			continue
		}
		fields := strings.Fields(cmd)
		outFile := fields[len(fields)-1]
		if strings.Contains(cmd, "--from-file") {
			// Dump case: the input is the argument before the output.
			in := fields[len(fields)-2]
			v := wtVariant{name: strings.TrimSuffix(outFile, ".cfs"), dump: in, image: outFile, opts: wtOptionsFromCommand(t, cmd)}
			if d := strings.TrimSuffix(outFile, ".cfs") + ".digest"; wtExists(filepath.Join(dir, d)) {
				v.digest = d
			}
			out = append(out, v)
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		base := "image"
		if name != "default" {
			base = "image-" + name
		}
		if outFile != base+".cfs" {
			t.Fatalf("commands.txt: variant %s writes %s, want %s.cfs", name, outFile, base)
		}
		out = append(out, wtVariant{
			name:   name,
			dump:   base + ".dump",
			image:  base + ".cfs",
			digest: base + ".digest",
			opts:   wtOptionsFromCommand(t, cmd),
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no variants in commands.txt", dir)
	}
	return out
}

func wtExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func wtParseDumpFile(t testing.TB, path string) *composefs.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer gz.Close()
		r = gz
	}
	root, err := dump.Parse(r, dump.ParseOptions{})
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return root
}

func wtReadDigest(t *testing.T, path string) fsverity.Digest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fsverity.ParseDigest(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// wtFirstDiff describes where two images first differ.
func wtFirstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			lo := i &^ 15
			return "first difference at byte " + strconv.Itoa(i) +
				"\n got: " + hex.EncodeToString(got[lo:min(lo+32, len(got))]) +
				"\nwant: " + hex.EncodeToString(want[lo:min(lo+32, len(want))])
		}
	}
	return "one is a prefix of the other"
}

// TestWriteGolden writes every variant of every golden case from its dump
// and compares the bytes and the digest with upstream mkcomposefs's output.
func TestWriteGolden(t *testing.T) {
	golden := testutil.GoldenDir(t)
	cases := testutil.GoldenCases(t)
	if len(cases) == 0 {
		t.Fatal("no golden cases")
	}
	for _, c := range cases {
		dir := filepath.Join(golden, c)
		for _, v := range wtGoldenVariants(t, dir) {
			t.Run(c+"/"+v.name, func(t *testing.T) {
				root := wtParseDumpFile(t, filepath.Join(dir, v.dump))
				want, err := os.ReadFile(filepath.Join(dir, v.image))
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				d, err := erofs.Write(&buf, root, v.opts)
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				got := buf.Bytes()
				if !bytes.Equal(got, want) {
					t.Fatalf("%s from %s: %d bytes, want %d; %s", v.image, v.dump, len(got), len(want), wtFirstDiff(got, want))
				}
				if d != fsverity.DigestBytes(want) {
					t.Errorf("returned digest %s is not the fs-verity digest of the image", d)
				}
				if v.digest != "" {
					if wantD := wtReadDigest(t, filepath.Join(dir, v.digest)); d != wantD {
						t.Errorf("digest %s, want %s", d, wantD)
					}
				}
				wtFsck(t, got)
			})
		}
	}
}

// TestWriteGoldenSha256 checks the image.sha256 files as well, so the
// comparison does not rest on the .cfs files alone.
func TestWriteGoldenSha256(t *testing.T) {
	golden := testutil.GoldenDir(t)
	for _, c := range testutil.GoldenCases(t) {
		dir := filepath.Join(golden, c)
		sumFile := filepath.Join(dir, "image.sha256")
		if !wtExists(sumFile) {
			continue
		}
		src := "image.dump"
		if wtExists(filepath.Join(dir, "input.dump")) {
			src = "input.dump"
		}
		t.Run(c, func(t *testing.T) {
			root := wtParseDumpFile(t, filepath.Join(dir, src))
			h := sha256.New()
			if _, err := erofs.Write(h, root, erofs.DefaultWriteOptions()); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(sumFile)
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Errorf("sha256 %s, want %s", got, want)
			}
		})
	}
}

// wtFsck runs fsck.erofs on an image.
func wtFsck(t *testing.T, img []byte) {
	t.Helper()
	tool := testutil.RequireTool(t, "fsck.erofs")
	p := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, p).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs: %v\n%s", err, out)
	}
}

// TestWriteUpstreamAssets writes every upstream test dump that has an
// expected image sha256, with the pinned version when given.
func TestWriteUpstreamAssets(t *testing.T) {
	dir := testutil.UpstreamAssetsDir(t)
	sums, err := filepath.Glob(filepath.Join(dir, "*.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) == 0 {
		t.Fatal("no upstream assets with a .sha256")
	}
	for _, sumFile := range sums {
		src := strings.TrimSuffix(sumFile, ".sha256")
		name := filepath.Base(src)
		t.Run(name, func(t *testing.T) {
			if testing.Short() && strings.HasPrefix(name, "cs9-") {
				t.Skip("large CentOS Stream 9 dump skipped in -short mode")
			}
			opts := erofs.DefaultWriteOptions()
			if b, err := os.ReadFile(strings.TrimSuffix(src, ".gz") + ".version"); err == nil {
				v, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					t.Fatal(err)
				}
				opts = erofs.WriteOptions{MinVersion: v, MaxVersion: v}
			}
			root := wtParseDumpFile(t, src)
			h := sha256.New()
			var img bytes.Buffer
			if _, err := erofs.Write(io.MultiWriter(h, &img), root, opts); err != nil {
				t.Fatalf("Write: %v", err)
			}
			b, err := os.ReadFile(sumFile)
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Fatalf("image sha256 %s, want %s", got, want)
			}
			// Upstream also feeds the image's dump back to mkcomposefs and
			// expects the same image: read it and write it again.
			back, err := erofs.Read(bytes.NewReader(img.Bytes()), int64(img.Len()))
			if err != nil {
				t.Fatalf("reading the image back: %v", err)
			}
			h.Reset()
			if _, err := erofs.Write(h, back, opts); err != nil {
				t.Fatalf("writing the read-back tree: %v", err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Errorf("image of the read-back tree: sha256 %s, want %s", got, want)
			}
			if name == "special.dump" || name == "longlink.dump" || name == "config-with-hard-link.dump.gz" {
				wtFsck(t, img.Bytes())
			}
		})
	}
}

// TestWriteUpstreamShouldFail checks that every should-fail dump is
// rejected by the parser or the writer with an ErrInvalid error.
func TestWriteUpstreamShouldFail(t *testing.T) {
	dir := testutil.UpstreamAssetsDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "should-fail-*.dump"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no should-fail dumps")
	}
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			root, err := dump.Parse(f, dump.ParseOptions{})
			if err == nil {
				_, err = erofs.Write(io.Discard, root, erofs.DefaultWriteOptions())
			}
			if err == nil {
				t.Fatal("accepted; upstream rejects it")
			}
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Errorf("error %v does not match composefs.ErrInvalid", err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
