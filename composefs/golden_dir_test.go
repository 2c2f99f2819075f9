package composefs_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// goldenVariant is one mkcomposefs run of a golden directory case, as
// commands.txt describes it.
type goldenVariant struct {
	name       string
	opts       composefs.BuildOptions
	minVersion int
	maxVersion int
	image      string // image file name (…cfs)
	digest     string // --print-digest-only output file
}

// parseCommands reads a case's commands.txt: "variant|mkcomposefs …" lines.
func parseCommands(t *testing.T, path string) []goldenVariant {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*goldenVariant{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(line, "|")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		v := byName[name]
		if v == nil {
			v = &goldenVariant{name: name, maxVersion: 1}
			byName[name] = v
			order = append(order, name)
		}
		fields := strings.Fields(cmd)
		if fields[0] != "mkcomposefs" {
			t.Fatalf("%s: unexpected command %q", path, cmd)
		}
		minSet, maxSet := false, false
		var args []string
		for i := 1; i < len(fields); i++ {
			f := fields[i]
			switch {
			case f == "--use-epoch":
				v.opts.UseEpoch = true
			case f == "--skip-xattrs":
				v.opts.SkipXattrs = true
			case f == "--user-xattrs":
				v.opts.UserXattrs = true
			case f == "--skip-devices":
				v.opts.SkipDevices = true
			case f == "--print-digest-only":
			case strings.HasPrefix(f, "--digest-store="):
			case strings.HasPrefix(f, "--min-version="):
				v.minVersion = atoi(t, strings.TrimPrefix(f, "--min-version="))
				minSet = true
			case strings.HasPrefix(f, "--max-version="):
				v.maxVersion = atoi(t, strings.TrimPrefix(f, "--max-version="))
				maxSet = true
			case f == ">":
				v.digest = fields[i+1]
				i++
			case strings.HasPrefix(f, "--"):
				t.Fatalf("%s: unknown option %q", path, f)
			default:
				args = append(args, f)
			}
		}
		// mkcomposefs: if either version option is given, the other
		// defaults to 0.
		if minSet && !maxSet {
			v.maxVersion = 0
		}
		if len(args) == 2 {
			v.image = args[1]
		}
	}
	var out []goldenVariant
	for _, n := range order {
		v := byName[n]
		if v.image == "" || v.digest == "" {
			t.Fatalf("%s: variant %s lacks an image or a digest command", path, n)
		}
		out = append(out, *v)
	}
	return out
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// directoryCases returns the golden cases built from a tree.tar.
func directoryCases(t *testing.T) []string {
	var out []string
	for _, c := range testutil.GoldenCases(t) {
		if _, err := os.Stat(filepath.Join(testutil.GoldenDir(t), c, "tree.tar")); err == nil {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		t.Fatal("no golden directory cases")
	}
	return out
}

// TestGoldenDirectories builds every golden directory case and variant
// from its extracted tree.tar and checks the tree against the variant's
// image dump, the object store against object-digests.txt, and the EROFS
// image bytes and digest against upstream's (goldenImageCheck).
func TestGoldenDirectories(t *testing.T) {
	testutil.RequireRoot(t)
	golden := testutil.GoldenDir(t)
	for _, c := range directoryCases(t) {
		t.Run(c, func(t *testing.T) {
			if c == "hugefile" && !testutil.Long() {
				t.Skip("hashes a 4 GiB sparse file (about 20 s): set CFS_TEST_LONG=1")
			}
			dir := filepath.Join(golden, c)
			tree := t.TempDir()
			testutil.ExtractTar(t, filepath.Join(dir, "tree.tar"), tree)
			wantObjects := readObjectDigests(t, filepath.Join(dir, "object-digests.txt"))
			for _, v := range parseCommands(t, filepath.Join(dir, "commands.txt")) {
				t.Run(v.name, func(t *testing.T) {
					ctx := context.Background()
					storeDir := filepath.Join(t.TempDir(), "objects")
					store, err := objstore.Open(storeDir)
					if err != nil {
						t.Fatal(err)
					}
					opts := v.opts
					opts.Store = store
					var last composefs.BuildProgress
					opts.Progress = func(p composefs.BuildProgress) { last = p }
					start, cpu := time.Now(), cpuTime()
					root, err := composefs.BuildFromDir(ctx, tree, opts)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("BuildFromDir took %v (%v CPU)", time.Since(start), cpuTime()-cpu)
					if !last.WalkDone || last.Files != last.TotalFiles || last.Bytes != last.TotalBytes {
						t.Errorf("final progress %+v: walk not done or counts differ", last)
					}
					if err := root.Validate(); err != nil {
						t.Fatal(err)
					}
					compareWithDump(t, root, filepath.Join(dir, strings.TrimSuffix(v.image, ".cfs")+".dump"))
					compareStore(t, storeDir, wantObjects)
					goldenImageCheck(t, root, v, dir)
				})
			}
		})
	}
}

// cpuTime returns the user+system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type objectLine struct {
	digest string
	size   int64
}

func readObjectDigests(t *testing.T, path string) map[string]objectLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]objectLine{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("%s: bad line %q", path, line)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out[f[0]] = objectLine{digest: f[1], size: size}
	}
	return out
}

// compareStore checks that the store holds exactly the expected objects,
// each with its fs-verity digest and size, and that an empty expectation
// left no store directory at all.
func compareStore(t *testing.T, storeDir string, want map[string]objectLine) {
	t.Helper()
	if len(want) == 0 {
		if _, err := os.Lstat(storeDir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("all-inline tree created the store directory (lstat: %v)", err)
		}
		return
	}
	got := map[string]objectLine{}
	err := filepath.WalkDir(storeDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(storeDir, p)
		dg, n, err := fsverity.DigestFile(context.Background(), p)
		if err != nil {
			return err
		}
		got[rel] = objectLine{digest: dg.String(), size: n}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("store lacks %s", p)
		} else if g != w {
			t.Errorf("store %s: digest %s size %d, want %s %d", p, g.digest, g.size, w.digest, w.size)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("store has unexpected file %s", p)
		}
	}
}

// compareWithDump checks the built tree against `composefs-info dump` of
// upstream's image. The dump shows the image read back, so directory
// sizes and link counts are the writer's (not compared), and directories
// holding whiteouts carry the "x" opaque xattrs the writer adds.
func compareWithDump(t *testing.T, root *composefs.Node, dumpPath string) {
	t.Helper()
	f, err := os.Open(dumpPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := dump.Parse(f, dump.ParseOptions{})
	if err != nil {
		t.Fatalf("parse %s: %v", dumpPath, err)
	}
	gotLines, wantLines := describe(root), describe(want)
	if strings.Join(gotLines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("tree differs from %s:\n%s", filepath.Base(dumpPath), diffLines(gotLines, wantLines))
	}
}

// describe renders every node of a tree with the fields a directory build
// determines.
func describe(root *composefs.Node) []string {
	var out []string
	root.Walk(func(p string, n *composefs.Node) error {
		n = n.Target()
		s := fmt.Sprintf("%q mode=%o uid=%d gid=%d mtime=%d.%09d", p, n.Mode, n.UID, n.GID, n.Mtime.Sec, n.Mtime.Nsec)
		if !n.IsDir() {
			s += fmt.Sprintf(" size=%d nlink=%d rdev=%d payload=%q content=%q", n.Size, n.Nlink, n.Rdev, n.Payload, n.Content)
			if n.Digest != nil && n.Content == nil {
				s += " digest=" + n.Digest.String()
			}
		}
		var xs []string
		for _, x := range n.Xattrs {
			if n.IsDir() && x.Value == "x" && (x.Name == "trusted.overlay.opaque" || x.Name == "user.overlay.opaque") {
				continue // added by the writer next to whiteouts
			}
			xs = append(xs, fmt.Sprintf("%q=%q", x.Name, x.Value))
		}
		sort.Strings(xs)
		out = append(out, s+" xattrs="+strings.Join(xs, ","))
		return nil
	})
	return out
}

func diffLines(got, want []string) string {
	var b strings.Builder
	inWant := map[string]bool{}
	for _, l := range want {
		inWant[l] = true
	}
	inGot := map[string]bool{}
	for _, l := range got {
		inGot[l] = true
	}
	for _, l := range got {
		if !inWant[l] {
			fmt.Fprintf(&b, "- built:  %s\n", l)
		}
	}
	for _, l := range want {
		if !inGot[l] {
			fmt.Fprintf(&b, "+ golden: %s\n", l)
		}
	}
	return b.String()
}
