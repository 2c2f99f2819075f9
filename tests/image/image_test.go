// Package image tests the cfs-commit image/dump/objects/mount commands and
// mount.cfs end to end, as a user runs them: every line of the golden
// commands.txt files runs with mkcomposefs replaced by `cfs-commit image`.
package image

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/internal/testutil"
	"golang.org/x/sys/unix"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunInMountNS(&wrapped{m}))
}

// wrapped builds the binaries once before the tests run (in the re-executed
// process too).
type wrapped struct{ m *testing.M }

func (w *wrapped) Run() int {
	dir, err := os.MkdirTemp("", "cfs-bin-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/cfs-dev/cfs/cmd/cfs-commit", "github.com/cfs-dev/cfs/cmd/mount.cfs")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		panic("building the commands: " + err.Error())
	}
	binDir = dir
	return w.m.Run()
}

func run(t *testing.T, dir string, stdin []byte, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// TestGoldenCommands runs each golden commands.txt line with mkcomposefs
// replaced by `cfs-commit image`, in a directory laid out as upstream's
// was (TREE extracted, objects scratch store, input.dump/image.dump copied),
// and compares every output with upstream's.
func TestGoldenCommands(t *testing.T) {
	testutil.RequireRoot(t) // extracting the trees needs root
	golden := testutil.GoldenDir(t)
	for _, c := range testutil.GoldenCases(t) {
		t.Run(c, func(t *testing.T) {
			if c == "hugefile" && !testutil.Long() {
				t.Skip("4 GiB sparse tree: set CFS_TEST_LONG=1")
			}
			cdir := filepath.Join(golden, c)
			work := t.TempDir()
			if _, err := os.Stat(filepath.Join(cdir, "tree.tar")); err == nil {
				if err := os.Mkdir(filepath.Join(work, "TREE"), 0o755); err != nil {
					t.Fatal(err)
				}
				testutil.ExtractTar(t, filepath.Join(cdir, "tree.tar"), filepath.Join(work, "TREE"))
			}
			for _, f := range []string{"input.dump", "image.dump"} {
				if b, err := os.ReadFile(filepath.Join(cdir, f)); err == nil {
					os.WriteFile(filepath.Join(work, f), b, 0o644)
				}
			}
			cmds, err := os.ReadFile(filepath.Join(cdir, "commands.txt"))
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(bytes.NewReader(cmds))
			n := 0
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "#") || line == "" {
					continue
				}
				_, cmdline, _ := strings.Cut(line, "|")
				cmdline, redirect, hasRedirect := strings.Cut(cmdline, " > ")
				args := strings.Fields(cmdline)
				if args[0] != "mkcomposefs" {
					t.Fatalf("unexpected command %q", cmdline)
				}
				args[0] = "image"
				out, errOut, code := run(t, work, nil, "cfs-commit", args...)
				if code != 0 {
					t.Fatalf("%s: exit %d: %s", cmdline, code, errOut)
				}
				n++
				if hasRedirect {
					want, err := os.ReadFile(filepath.Join(cdir, strings.TrimSpace(redirect)))
					if err != nil {
						t.Fatal(err)
					}
					if out != string(want) {
						t.Errorf("%s: stdout %q, upstream %q", cmdline, out, want)
					}
					continue
				}
				img := args[len(args)-1]
				got, err := os.ReadFile(filepath.Join(work, img))
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(filepath.Join(cdir, img))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: image differs from upstream's %s", cmdline, img)
				}
				// dump and objects of the written image equal upstream's.
				if dumpName := strings.TrimSuffix(img, ".cfs") + ".dump"; fileExists(filepath.Join(cdir, dumpName)) && img != "image-from-dump.cfs" {
					out, errOut, code := run(t, work, nil, "cfs-commit", "dump", img)
					wantDump, _ := os.ReadFile(filepath.Join(cdir, dumpName))
					if code != 0 || out != string(wantDump) {
						t.Errorf("cfs-commit dump %s: exit %d %s; differs from %s", img, code, errOut, dumpName)
					}
				}
				if img == "image.cfs" {
					out, _, _ := run(t, work, nil, "cfs-commit", "objects", img)
					wantObj, _ := os.ReadFile(filepath.Join(cdir, "objects.txt"))
					if out != string(wantObj) {
						t.Errorf("cfs-commit objects: %q, want %q", out, wantObj)
					}
					out, _, _ = run(t, work, nil, "cfs-commit", "dump", "--ls", img)
					wantLs, _ := os.ReadFile(filepath.Join(cdir, "ls.txt"))
					if out != string(wantLs) {
						t.Errorf("cfs-commit dump --ls differs from ls.txt")
					}
				}
			}
			if n == 0 {
				t.Fatal("no command ran")
			}
		})
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestImageErrors(t *testing.T) {
	work := t.TempDir()
	bad := filepath.Join(testutil.UpstreamAssetsDir(t), "should-fail-dir-hardlink.dump")
	_, errOut, code := run(t, work, nil, "cfs-commit", "image", "--from-file", bad, "out.cfs")
	if code != 3 || !strings.Contains(errOut, "hardlink") {
		t.Errorf("bad dump: exit %d, %q (want exit 3 naming the hardlink)", code, errOut)
	}
	if fileExists(filepath.Join(work, "out.cfs")) {
		t.Error("an image was left behind after a failed write")
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
	_, errOut, code = run(t, work, nil, "cfs-commit", "image", "--print-digest-only", "a", "b")
	if code != 2 || !strings.Contains(errOut, "SOURCE only") {
		t.Errorf("usage: exit %d %q", code, errOut)
	}
	_, errOut, code = run(t, work, nil, "cfs-commit", "image", "--skip-xattrs", "--user-xattrs", ".", "x.cfs")
	if code != 2 {
		t.Errorf("conflicting flags: exit %d %q", code, errOut)
	}
	_, errOut, code = run(t, work, nil, "cfs-commit", "image", "/nonexistent", "x.cfs")
	if code != 1 || !strings.Contains(errOut, "/nonexistent") {
		t.Errorf("missing source: exit %d %q", code, errOut)
	}
	// stdin dump and stdout image
	dump := []byte("/ 4096 40755 2 0 0 0 1700000000.0 - - -\n/f 3 100644 1 0 0 0 1700000000.0 - abc -\n")
	out, errOut, code := run(t, work, dump, "cfs-commit", "image", "--from-file", "--print-digest", "-", "-")
	if code != 0 || len(out) < 4096 {
		t.Fatalf("stdin/stdout: exit %d %q", code, errOut)
	}
	// Corrupt image: dump refuses with exit 3.
	img := filepath.Join(work, "c.cfs")
	os.WriteFile(img, bytes.Repeat([]byte{0x42}, 8192), 0o644)
	_, errOut, code = run(t, work, nil, "cfs-commit", "dump", img)
	if code != 3 {
		t.Errorf("corrupt image: exit %d %q", code, errOut)
	}
}

// sampleImage builds an image + store of a small tree with the CLI.
func sampleImage(t *testing.T) (work, digest string) {
	t.Helper()
	work = t.TempDir()
	src := filepath.Join(work, "src")
	os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(src, "usr/bin/tool"), bytes.Repeat([]byte("x"), 10000), 0o755)
	os.WriteFile(filepath.Join(src, "usr/bin/other"), bytes.Repeat([]byte("y"), 300), 0o644)
	os.WriteFile(filepath.Join(src, "small"), []byte("hi\n"), 0o644)
	out, errOut, code := run(t, work, nil, "cfs-commit", "image", "--print-digest", "--digest-store=objects", "src", "image.cfs")
	if code != 0 {
		t.Fatalf("image: %d %s", code, errOut)
	}
	return work, strings.TrimSpace(out)
}

func TestObjectsMissing(t *testing.T) {
	work, _ := sampleImage(t)
	out, _, code := run(t, work, nil, "cfs-commit", "objects", "--missing", "objects", "image.cfs")
	if code != 0 || out != "" {
		t.Fatalf("complete store: exit %d, %q", code, out)
	}
	all, _, _ := run(t, work, nil, "cfs-commit", "objects", "image.cfs")
	first := strings.SplitN(all, "\n", 2)[0]
	os.Remove(filepath.Join(work, "objects", first))
	out, errOut, code := run(t, work, nil, "cfs-commit", "objects", "--missing", "objects", "image.cfs")
	if code == 0 || strings.TrimSpace(out) != first || !strings.Contains(errOut, "1 of 2 objects missing") {
		t.Fatalf("missing object: exit %d, %q, %q", code, out, errOut)
	}
}

func TestMountCommands(t *testing.T) {
	testutil.RequireMountNS(t)
	work, digest := sampleImage(t)
	mnt := filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)

	// kernel verification is refused here (no fs-verity), with exit 5
	_, errOut, code := run(t, work, nil, "cfs-commit", "mount", "--basedir", "objects", "image.cfs", mnt)
	if code != 5 || !strings.Contains(errOut, "fs-verity") {
		t.Fatalf("--verify=kernel: exit %d %q", code, errOut)
	}
	// wrong digest: exit 4
	wrong := strings.Repeat("0", 64)
	_, errOut, code = run(t, work, nil, "cfs-commit", "mount", "--basedir", "objects", "--digest", wrong, "--verify", "objects", "image.cfs", mnt)
	if code != 4 || !strings.Contains(errOut, wrong) {
		t.Fatalf("wrong digest: exit %d %q", code, errOut)
	}
	_, errOut, code = run(t, work, nil, "cfs-commit", "mount", "--basedir", "objects", "--digest", digest, "--verify", "objects", "image.cfs", mnt)
	if code != 0 {
		t.Fatalf("mount: exit %d %q", code, errOut)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "usr/bin/tool"))
	if err != nil || len(b) != 10000 {
		t.Fatalf("read through mount: %d %v", len(b), err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}

	// mount -t cfs through the mount.cfs helper: make mount(8) find our
	// helper by mounting a tmpfs holding it over /usr/sbin (this private
	// namespace only).
	testutil.RequireTool(t, "mount")
	sbin, err := filepath.EvalSymlinks("/sbin")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sbin, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sbin, unix.MNT_DETACH)
	helper, _ := os.ReadFile(filepath.Join(binDir, "mount.cfs"))
	if err := os.WriteFile(filepath.Join(sbin, "mount.cfs"), helper, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "cfs", filepath.Join(work, "image.cfs"), mnt, "-o", "basedir="+filepath.Join(work, "objects")+",digest="+digest+",verify=objects").CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t cfs: %v: %s", err, out)
	}
	b, err = os.ReadFile(filepath.Join(mnt, "usr/bin/other"))
	if err != nil || len(b) != 300 {
		t.Fatalf("read through mount -t cfs: %d %v", len(b), err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("mount", "-t", "cfs", filepath.Join(work, "image.cfs"), mnt, "-o", "basedir="+filepath.Join(work, "objects")+",digest="+wrong+",verify=objects").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mismatch") {
		t.Fatalf("mount -t cfs with a wrong digest: %v %s", err, out)
	}
}
