package erofs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// rdGoldenImage is one image of the golden data with the composefs-info
// output that belongs to it.
type rdGoldenImage struct {
	name    string // "case/image-variant.cfs"
	path    string
	dump    string // the golden `composefs-info dump` of this image
	ls      string // `composefs-info ls` (image.cfs only, else "")
	objects string // `composefs-info objects` (image.cfs only, else "")
}

// rdGoldenImages lists every image*.cfs of every golden case.
func rdGoldenImages(t testing.TB) []rdGoldenImage {
	t.Helper()
	var out []rdGoldenImage
	for _, c := range testutil.GoldenCases(t) {
		dir := filepath.Join(testutil.GoldenDir(t), c)
		imgs, err := filepath.Glob(filepath.Join(dir, "image*.cfs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range imgs {
			base := filepath.Base(img)
			g := rdGoldenImage{name: c + "/" + base, path: img}
			switch base {
			case "image-from-dump.cfs":
				// mkcomposefs --from-file image.dump: composefs-info dump
				// of it reproduces image.dump (README, dumpfeatures).
				g.dump = filepath.Join(dir, "image.dump")
			default:
				g.dump = strings.TrimSuffix(img, ".cfs") + ".dump"
			}
			if base == "image.cfs" {
				g.ls = filepath.Join(dir, "ls.txt")
				g.objects = filepath.Join(dir, "objects.txt")
			}
			out = append(out, g)
		}
	}
	if len(out) < 18 {
		t.Fatalf("found only %d golden images", len(out))
	}
	return out
}

func rdReadGolden(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rdDescribeTree renders every field of every node, one line per node in
// Walk order, for comparing trees in tests.
func rdDescribeTree(root *composefs.Node) []string {
	var out []string
	_ = root.Walk(func(p string, n *composefs.Node) error {
		if n.Link != nil {
			out = append(out, fmt.Sprintf("%q hardlink -> %q", p, n.Link.Path()))
			return nil
		}
		d := "-"
		if n.Digest != nil {
			d = n.Digest.String()
		}
		out = append(out, fmt.Sprintf("%q size=%d mode=%o nlink=%d uid=%d gid=%d rdev=%d mtime=%d.%d payload=%q content=%q digest=%s xattrs=%q",
			p, n.Size, n.Mode, n.Nlink, n.UID, n.GID, n.Rdev, n.Mtime.Sec, n.Mtime.Nsec, n.Payload, n.Content, d, n.Xattrs))
		return nil
	})
	return out
}

func rdDiffLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: first difference at line %d:\n got: %.400s\nwant: %.400s", what, i+1, got[i], want[i])
			return
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d lines, want %d", what, len(got), len(want))
	}
}

// TestReadGoldenTree reads every golden image and compares the tree, field
// by field, with the tree the golden `composefs-info dump` describes.
func TestReadGoldenTree(t *testing.T) {
	for _, g := range rdGoldenImages(t) {
		t.Run(g.name, func(t *testing.T) {
			got, err := ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("tree read from the image is not valid: %v", err)
			}
			want, err := dump.Parse(bytes.NewReader(rdReadGolden(t, g.dump)), dump.ParseOptions{Strict: true})
			if err != nil {
				t.Fatal(err)
			}
			gl, wl := rdDescribeTree(got), rdDescribeTree(want)
			if len(wl) == 0 {
				t.Fatal("empty golden tree")
			}
			rdDiffLines(t, "tree", gl, wl)
		})
	}
}

// TestReadGoldenDump is the composefs-info equivalence: for every golden
// image, Read followed by the dump printer gives the golden
// `composefs-info dump` byte for byte, and likewise `ls` and `objects`.
func TestReadGoldenDump(t *testing.T) {
	for _, g := range rdGoldenImages(t) {
		t.Run(g.name, func(t *testing.T) {
			root, err := ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what, golden string, write func(*bytes.Buffer) error) {
				var buf bytes.Buffer
				if err := write(&buf); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				want := string(rdReadGolden(t, golden))
				if buf.String() != want {
					rdDiffLines(t, what, strings.SplitAfter(buf.String(), "\n"), strings.SplitAfter(want, "\n"))
				}
			}
			check("dump", g.dump, func(b *bytes.Buffer) error { return dump.Write(b, root) })
			if g.ls != "" {
				check("ls", g.ls, func(b *bytes.Buffer) error { return dump.WriteLs(b, root) })
			}
			if g.objects != "" {
				check("objects", g.objects, func(b *bytes.Buffer) error { return dump.WriteObjects(b, root) })
			}
		})
	}
}

// TestObjectsGolden checks Objects against `composefs-info objects` and,
// for every image, against the payloads of the tree Read returns.
func TestObjectsGolden(t *testing.T) {
	for _, g := range rdGoldenImages(t) {
		t.Run(g.name, func(t *testing.T) {
			img := rdReadGolden(t, g.path)
			objs, err := Objects(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.IsSorted(objs) || len(slices.Compact(slices.Clone(objs))) != len(objs) {
				t.Errorf("Objects is not sorted and distinct: %q", objs)
			}
			root, err := Read(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			var fromTree []string
			_ = root.Walk(func(_ string, n *composefs.Node) error {
				if n.Link == nil && n.IsRegular() && n.Payload != "" {
					fromTree = append(fromTree, n.Payload)
				}
				return nil
			})
			slices.Sort(fromTree)
			fromTree = slices.Compact(fromTree)
			if !slices.Equal(objs, fromTree) {
				t.Errorf("Objects = %q, payloads in the tree = %q", objs, fromTree)
			}
			im, err := Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			first, err := im.FirstObject()
			switch {
			case err != nil:
				t.Errorf("FirstObject: %v", err)
			case len(objs) == 0 && first != "":
				t.Errorf("FirstObject = %q on an image without objects", first)
			case len(objs) > 0 && !slices.Contains(objs, first):
				t.Errorf("FirstObject = %q, not one of %q", first, objs)
			}
			if g.objects == "" {
				return
			}
			var want []string
			for l := range strings.Lines(string(rdReadGolden(t, g.objects))) {
				want = append(want, strings.TrimSuffix(l, "\n"))
			}
			if !slices.Equal(objs, want) {
				t.Errorf("Objects = %q, composefs-info objects = %q", objs, want)
			}
		})
	}
}

// TestOpenHeader checks the header and superblock fields Open exposes on
// images whose values the spec states.
func TestOpenHeader(t *testing.T) {
	golden := testutil.GoldenDir(t)
	tests := []struct {
		image            string
		hasACL           bool
		composefsVersion uint32
	}{
		{"empty/image.cfs", false, 0},
		{"basic/image.cfs", false, 0},
		{"xattrs/image.cfs", true, 0},
		{"xattrs/image-skip-xattrs.cfs", false, 0},
		{"whiteouts/image.cfs", false, 1},
		{"whiteouts/image-v0.cfs", false, 0},
		{"whiteouts/image-v1.cfs", false, 1},
		{"dumpfeatures/image.cfs", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			img := rdReadGolden(t, filepath.Join(golden, tt.image))
			im, err := Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if im.Header.HasACL() != tt.hasACL {
				t.Errorf("HasACL = %v, want %v", im.Header.HasACL(), tt.hasACL)
			}
			if im.Header.ComposefsVersion != tt.composefsVersion {
				t.Errorf("ComposefsVersion = %d, want %d", im.Header.ComposefsVersion, tt.composefsVersion)
			}
			sb := im.Superblock
			if sb.FeatureCompat != FeatureCompat || sb.BlkSzBits != BlockSizeBits || sb.MetaBlkAddr != 0 {
				t.Errorf("superblock %+v: unexpected feature_compat, blkszbits or meta_blkaddr", sb)
			}
			if int64(sb.Blocks)*BlockSize != int64(len(img)) {
				t.Errorf("Blocks = %d for an image of %d bytes", sb.Blocks, len(img))
			}
		})
	}
	// The worked example of spec §11.
	img := rdReadGolden(t, filepath.Join(golden, "empty/image.cfs"))
	im, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	sb := im.Superblock
	if sb.RootNid != 36 || sb.Inos != 257 || sb.BuildTime != 1700000000 || sb.BuildTimeNsec != 0 || sb.Blocks != 4 || sb.XattrBlkAddr != 2 {
		t.Errorf("empty image superblock = %+v, want root 36, inos 257, build time 1700000000.0, 4 blocks, xattr_blkaddr 2", sb)
	}
}

// TestFsckGolden checks that fsck.erofs accepts every golden image: the
// inputs the reader is tested against are sound EROFS.
func TestFsckGolden(t *testing.T) {
	fsck := testutil.RequireTool(t, "fsck.erofs")
	for _, g := range rdGoldenImages(t) {
		out, err := exec.Command(fsck, g.path).CombinedOutput()
		if err != nil {
			t.Errorf("fsck.erofs %s: %v\n%s", g.name, err, out)
		}
	}
}

// TestDumpErofsSuperblock cross-checks the superblock fields Open decodes
// with erofs-utils' dump.erofs.
func TestDumpErofsSuperblock(t *testing.T) {
	tool := testutil.RequireTool(t, "dump.erofs")
	for _, g := range rdGoldenImages(t) {
		t.Run(g.name, func(t *testing.T) {
			cmd := exec.Command(tool, g.path)
			cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("dump.erofs: %v\n%s", err, out)
			}
			fields := map[string]string{}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				k, v, ok := strings.Cut(sc.Text(), ":")
				if ok {
					fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
				}
			}
			img := rdReadGolden(t, g.path)
			im, err := Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			sb := im.Superblock
			checks := []struct {
				key  string
				want uint64
			}{
				{"Filesystem blocks", uint64(sb.Blocks)},
				{"Filesystem inode metadata start block", uint64(sb.MetaBlkAddr)},
				{"Filesystem shared xattr metadata start block", uint64(sb.XattrBlkAddr)},
				{"Filesystem root nid", uint64(sb.RootNid)},
				{"Filesystem inode count", sb.Inos},
			}
			for _, c := range checks {
				v, ok := fields[c.key]
				if !ok {
					t.Fatalf("dump.erofs printed no %q:\n%s", c.key, out)
				}
				got, err := strconv.ParseUint(v, 10, 64)
				if err != nil || got != c.want {
					t.Errorf("%s: dump.erofs says %q, Open decoded %d", c.key, v, c.want)
				}
			}
			created, err := time.Parse("Mon Jan _2 15:04:05 2006", fields["Filesystem created"])
			if err != nil {
				t.Fatalf("parsing dump.erofs creation time: %v", err)
			}
			if created.Unix() != int64(sb.BuildTime) {
				t.Errorf("build time: dump.erofs says %v (%d), Open decoded %d", created, created.Unix(), sb.BuildTime)
			}
		})
	}
}

// TestReadFileErrors checks that a missing file is reported as such and an
// error names the image.
func TestReadFileErrors(t *testing.T) {
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.cfs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(missing) = %v, want ErrNotExist", err)
	}
	p := filepath.Join(t.TempDir(), "zero.cfs")
	if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(p)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), p) {
		t.Errorf("ReadFile(zeros) = %v, want ErrCorrupt naming the file", err)
	}
}

// benchImage writes an image of dirs directories with files external
// files each, with an xattr shared by all of them.
func benchImage(b *testing.B, dirs, files int) []byte {
	b.Helper()
	root := composefs.NewNode("", composefs.TypeDir|0o755)
	for i := range dirs {
		d := composefs.NewNode(fmt.Sprintf("dir%04d", i), composefs.TypeDir|0o755)
		if err := root.AddChild(d); err != nil {
			b.Fatal(err)
		}
		for j := range files {
			f := composefs.NewNode(fmt.Sprintf("file%05d", j), composefs.TypeRegular|0o644)
			f.Size = 4096
			var dg fsverity.Digest
			dg[0], dg[1], dg[2] = byte(i), byte(j), byte(j>>8)
			f.Digest = &dg
			f.Payload = dg.ObjectPath()
			if err := f.SetXattr("security.selinux", "system_u:object_r:usr_t:s0"); err != nil {
				b.Fatal(err)
			}
			if err := d.AddChild(f); err != nil {
				b.Fatal(err)
			}
		}
	}
	var buf bytes.Buffer
	if _, err := Write(&buf, root, DefaultWriteOptions()); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkRead(b *testing.B) {
	img := benchImage(b, 100, 1000)
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	for range b.N {
		if _, err := Read(bytes.NewReader(img), int64(len(img))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkObjects(b *testing.B) {
	img := benchImage(b, 100, 1000)
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	for range b.N {
		objs, err := Objects(bytes.NewReader(img), int64(len(img)))
		if err != nil || len(objs) != 100*1000 {
			b.Fatalf("%d objects, %v", len(objs), err)
		}
	}
}
