package composefs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/testutil"
)

// TestBuildFromTarGolden builds every golden directory case straight from
// its tree.tar, without extracting it, with each variant's options, and
// checks the tree against the variant's dump, the object store against
// object-digests.txt, and the EROFS image bytes and digest against
// upstream's. The default variant is built a second time without a store
// (hash only) and must give the same image.
func TestBuildFromTarGolden(t *testing.T) {
	golden := testutil.GoldenDir(t)
	for _, c := range directoryCases(t) {
		t.Run(c, func(t *testing.T) {
			if c == "hugefile" && !testutil.Long() {
				t.Skip("streams a 4 GiB sparse member through the hasher: set CFS_TEST_LONG=1")
			}
			dir := filepath.Join(golden, c)
			tarPath := filepath.Join(dir, "tree.tar")
			wantObjects := readObjectDigests(t, filepath.Join(dir, "object-digests.txt"))
			for _, v := range parseCommands(t, filepath.Join(dir, "commands.txt")) {
				t.Run(v.name, func(t *testing.T) {
					storeDir := filepath.Join(t.TempDir(), "objects")
					store, err := objstore.Open(storeDir)
					if err != nil {
						t.Fatal(err)
					}
					opts := composefs.TarOptions{
						UseEpoch:    v.opts.UseEpoch,
						SkipXattrs:  v.opts.SkipXattrs,
						UserXattrs:  v.opts.UserXattrs,
						SkipDevices: v.opts.SkipDevices,
						Store:       store,
					}
					var last composefs.BuildProgress
					opts.Progress = func(p composefs.BuildProgress) { last = p }
					root := buildTarFile(t, tarPath, opts)
					if !last.WalkDone || last.Files != last.TotalFiles || last.Bytes != last.TotalBytes || last.Entries == 0 {
						t.Errorf("final progress %+v: not done or counts differ", last)
					}
					if err := root.Validate(); err != nil {
						t.Fatal(err)
					}
					compareWithDump(t, root, filepath.Join(dir, strings.TrimSuffix(v.image, ".cfs")+".dump"))
					compareStore(t, storeDir, wantObjects)
					img := tarImageCheck(t, root, v, dir)

					if v.name != "default" {
						return
					}
					opts.Store, opts.Progress = nil, nil
					again := buildTarFile(t, tarPath, opts)
					var buf bytes.Buffer
					if _, err := erofs.Write(&buf, again, erofs.WriteOptions{MinVersion: v.minVersion, MaxVersion: v.maxVersion}); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(buf.Bytes(), img) {
						t.Error("building without a store gives another image")
					}
				})
			}
		})
	}
}

func buildTarFile(t *testing.T, path string, opts composefs.TarOptions) *composefs.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, err := composefs.BuildFromTar(context.Background(), f, opts)
	if err != nil {
		t.Fatalf("BuildFromTar %s: %v", path, err)
	}
	return root
}

// tarImageCheck writes the tree as an image and compares it with the
// variant's golden image and digest; it returns the image.
func tarImageCheck(t *testing.T, root *composefs.Node, v goldenVariant, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	d, err := erofs.Write(&buf, root, erofs.WriteOptions{MinVersion: v.minVersion, MaxVersion: v.maxVersion})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, v.image))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("image differs from %s (%d bytes, want %d)", v.image, buf.Len(), len(want))
	}
	wantDigest, err := os.ReadFile(filepath.Join(dir, v.digest))
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != strings.TrimSpace(string(wantDigest)) {
		t.Errorf("image digest %s, want %s (%s)", d, strings.TrimSpace(string(wantDigest)), v.digest)
	}
	if got := fsverity.DigestBytes(buf.Bytes()); got != d {
		t.Errorf("erofs.Write returned digest %s, the image has %s", d, got)
	}
	return buf.Bytes()
}

// tm is one member of a test archive.
type tm struct {
	hdr  tar.Header
	data string
}

var tarTime = time.Unix(1700000000, 0)

func treg(name, data string, mode int64) tm {
	return tm{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: tarTime}, data: data}
}

func tdir(name string, mode int64) tm {
	return tm{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: tarTime}}
}

func tsym(name, target string) tm {
	return tm{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: tarTime}}
}

func thard(name, target string) tm {
	return tm{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: tarTime}}
}

func tdev(name string, typ byte, major, minor int64, mode int64) tm {
	return tm{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: tarTime}}
}

// with sets PAX records on a member.
func (m tm) with(kv ...string) tm {
	if m.hdr.PAXRecords == nil {
		m.hdr.PAXRecords = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m.hdr.PAXRecords[kv[i]] = kv[i+1]
	}
	m.hdr.Format = tar.FormatPAX
	return m
}

// tarBytes writes the members as a tar archive with Go's writer.
func tarBytes(t testing.TB, members ...tm) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func buildTar(t *testing.T, archive []byte, opts composefs.TarOptions) (*composefs.Node, error) {
	t.Helper()
	return composefs.BuildFromTar(context.Background(), bytes.NewReader(archive), opts)
}

func mustBuildTar(t *testing.T, archive []byte, opts composefs.TarOptions) *composefs.Node {
	t.Helper()
	root, err := buildTar(t, archive, opts)
	if err != nil {
		t.Fatalf("BuildFromTar: %v", err)
	}
	if err := root.Validate(); err != nil {
		t.Fatalf("built tree does not validate: %v", err)
	}
	return root
}

// tarLookup finds the node at a slash-separated path below root.
func tarLookup(t *testing.T, root *composefs.Node, p string) *composefs.Node {
	t.Helper()
	n := root
	for _, c := range strings.Split(p, "/") {
		if n = n.Lookup(c); n == nil {
			t.Fatalf("%s: not in the tree", p)
		}
	}
	return n
}

// rawPAXRecord encodes one PAX extended header record.
func rawPAXRecord(k, v string) string {
	n := len(k) + len(v) + 3
	l := len(strconv.Itoa(n))
	if len(strconv.Itoa(n+l)) > l {
		l++
	}
	return fmt.Sprintf("%d %s=%s\n", n+l, k, v)
}

// rawTarHeader returns a ustar header block.
func rawTarHeader(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], fmt.Sprintf("%011o\x00", tarTime.Unix()))
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func rawPad512(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// rawPAXMember returns a PAX 'x' header with the records, then a member
// header of the given type and data (Go's writer refuses to write
// records such as GNU.sparse.* or a NUL in a path).
func rawPAXMember(name string, typ byte, data string, records ...string) []byte {
	var recs string
	for i := 0; i+1 < len(records); i += 2 {
		recs += rawPAXRecord(records[i], records[i+1])
	}
	out := rawTarHeader("PaxHeaders/x", 'x', len(recs))
	out = append(out, rawPad512([]byte(recs))...)
	out = append(out, rawTarHeader(name, typ, len(data))...)
	return append(out, rawPad512([]byte(data))...)
}

func rawTarArchive(members ...[]byte) []byte {
	var out []byte
	for _, m := range members {
		out = append(out, m...)
	}
	return append(out, make([]byte, 1024)...)
}

// TestBuildFromTarRefuses checks that archives trying to escape the tree
// or naming impossible files are refused with an error that names the
// member and matches ErrInvalid.
func TestBuildFromTarRefuses(t *testing.T) {
	long := strings.Repeat("n", 256)
	// A GNU sparse 1.0 member takes its name from a PAX record that Go's
	// reader does not check for NUL bytes.
	nulName := rawTarArchive(rawPAXMember("placeholder", tar.TypeReg, string(rawPad512([]byte("0\n"))),
		"GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", "evil\x00name", "GNU.sparse.realsize", "0"))
	tests := []struct {
		name    string
		archive []byte
		member  string // TarError.Name
		reason  string // in the message
	}{
		{"dotdot", tarBytes(t, treg("../evil", "x", 0o644)), "../evil", `".." component`},
		{"dotdot inside", tarBytes(t, tdir("a/", 0o755), treg("a/../../evil", "x", 0o644)), "a/../../evil", `".." component`},
		{"absolute dotdot", tarBytes(t, treg("/../etc/passwd", "x", 0o644)), "/../etc/passwd", `".." component`},
		{"dotdot dir", tarBytes(t, tdir("./a/../", 0o755)), "./a/../", `".." component`},
		{"symlink parent absolute", tarBytes(t, tsym("a", "/etc"), treg("a/passwd", "root::0:0::/:/bin/sh\n", 0o644)), "a/passwd", "parent /a is a symlink"},
		{"symlink parent dotdot", tarBytes(t, tsym("a", ".."), treg("a/x", "x", 0o644)), "a/x", "parent /a is a symlink"},
		{"symlink parent deep", tarBytes(t, tdir("d/", 0o755), tsym("d/l", "/"), tdir("d/l/etc/", 0o755)), "d/l/etc/", "parent /d/l is a symlink"},
		{"symlink parent of dir", tarBytes(t, tsym("l", "/tmp"), tdir("l/sub/", 0o755)), "l/sub/", "parent /l is a symlink"},
		{"file parent", tarBytes(t, treg("f", "x", 0o644), treg("f/x", "x", 0o644)), "f/x", "parent /f is not a directory"},
		{"file over non-empty dir", tarBytes(t, tdir("d/", 0o755), treg("d/c", "x", 0o644), treg("d", "x", 0o644)), "d", "directory that is not empty"},
		{"symlink over implicit dir", tarBytes(t, treg("d/c", "x", 0o644), tsym("d", "/etc")), "d", "directory that is not empty"},
		{"hardlink over non-empty dir", tarBytes(t, treg("f", "x", 0o644), treg("d/c", "x", 0o644), thard("d", "f")), "d", "directory that is not empty"},
		{"hardlink dotdot", tarBytes(t, thard("h", "../x")), "h", `".." component`},
		{"hardlink absolute dotdot", tarBytes(t, thard("h", "/../../etc/shadow")), "h", `".." component`},
		{"hardlink to dir", tarBytes(t, tdir("d/", 0o755), thard("h", "d")), "h", "hardlink to directory /d"},
		{"hardlink to root", tarBytes(t, thard("h", "./")), "h", "hardlink to the root"},
		{"hardlink missing", tarBytes(t, thard("h", "etc/shadow")), "h", "/etc does not exist"},
		{"hardlink missing file", tarBytes(t, tdir("etc/", 0o755), thard("h", "etc/shadow")), "h", "/etc/shadow does not exist"},
		{"hardlink forward", tarBytes(t, thard("h", "f"), treg("f", "x", 0o644)), "h", "/f does not exist"},
		{"hardlink through symlink", tarBytes(t, tdir("d/", 0o755), treg("d/f", "x", 0o644), tsym("s", "d"), thard("h", "s/f")), "h", "goes through symlink /s"},
		{"hardlink through absolute symlink", tarBytes(t, tsym("s", "/etc"), thard("h", "s/shadow")), "h", "goes through symlink /s"},
		{"hardlink as root", tarBytes(t, treg("f", "x", 0o644), thard(".", "f")), ".", "root"},
		{"NUL in name", nulName, "evil\x00name", "NUL"},
		{"long name", tarBytes(t, treg("d/"+long, "x", 0o644)), "d/" + long, "256 bytes is longer than 255"},
		{"long dir name", tarBytes(t, tdir(long+"/", 0o755)), long + "/", "256 bytes is longer than 255"},
		{"root not a dir", tarBytes(t, treg("/.", "x", 0o644)), "/.", "root member is not a directory"},
		{"uid out of range", tarBytes(t, func() tm { m := treg("f", "x", 0o644); m.hdr.Uid = 1<<32 - 1; return m }()), "f", "out of range"},
		{"device number too big", tarBytes(t, tdev("dev/x", tar.TypeChar, 4096, 0, 0o600)), "dev/x", "does not fit"},
		{"empty symlink", tarBytes(t, tsym("s", "")), "s", "symlink without a target"},
		{"global header", tarBytes(t, tm{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"mtime": "0"}}}), "g", `record "mtime"`},
		{"text ACL with a name", tarBytes(t, treg("f", "x", 0o644).with("SCHILY.acl.access", "user::rw-\nuser:alice:r--\ngroup::r--\nmask::r--\nother::r--\n")), "f", "names a user or group"},
		{"bad binary ACL", tarBytes(t, treg("f", "x", 0o644).with("SCHILY.xattr.system.posix_acl_access", "\x02\x00\x00\x00\x04\x00\x07\x00\xff\xff\xff\xff")), "f", "system.posix_acl_access"},
		{"xattr escaped twice", tarBytes(t, treg("f", "x", 0o644).with("SCHILY.xattr.user.a%", "1", "SCHILY.xattr.user.a%25", "2")), "f", "recorded twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, err := buildTar(t, tc.archive, composefs.TarOptions{})
			if err == nil {
				t.Fatalf("accepted; tree has %d root entries", len(root.Children))
			}
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			var te *composefs.TarError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *TarError", err)
			}
			if te.Name != tc.member {
				t.Errorf("TarError names %q, want %q", te.Name, tc.member)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.member)) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not name %q or say %q", err, tc.member, tc.reason)
			}
		})
	}
}

// TestBuildFromTarMalformedHeader: a header Go's reader refuses (a NUL in
// a PAX path) is a malformed archive, reported with its position.
func TestBuildFromTarMalformedHeader(t *testing.T) {
	archive := rawTarArchive(rawTarHeader("first", tar.TypeReg, 0), rawPAXMember("x", tar.TypeReg, "", "path", "a\x00b"))
	_, err := buildTar(t, archive, composefs.TarOptions{})
	var te *composefs.TarError
	if !errors.As(err, &te) || !errors.Is(err, composefs.ErrInvalid) || !errors.Is(err, tar.ErrHeader) {
		t.Fatalf("error %v: want a *TarError matching ErrInvalid and tar.ErrHeader", err)
	}
	if te.Index != 2 || !strings.Contains(err.Error(), `after member "first"`) {
		t.Errorf("error %q (index %d) does not locate the header after \"first\"", err, te.Index)
	}
}

func tmOwned(m tm, uid, gid int) tm {
	m.hdr.Uid, m.hdr.Gid = uid, gid
	return m
}

func tmMtime(m tm, at time.Time) tm {
	m.hdr.ModTime = at
	m.hdr.Format = tar.FormatPAX
	return m
}

func tarTS(t time.Time) composefs.Timespec {
	return composefs.Timespec{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
}

func tarXattrs(n *composefs.Node) map[string]string {
	m := map[string]string{}
	for _, x := range n.Xattrs {
		m[x.Name] = x.Value
	}
	return m
}

func TestBuildFromTarPaths(t *testing.T) {
	rootTime := time.Unix(1700000000, 123456789)
	t.Run("root member and normalised names", func(t *testing.T) {
		root := mustBuildTar(t, tarBytes(t,
			tmMtime(tmOwned(tdir("./", 0o1750), 5, 6), rootTime),
			treg("/abs", "absolute", 0o644),
			treg("./a/b", "implicit parent", 0o644),
			tdir("c//d/", 0o750),
			tdir("c/d/./e/", 0o700),
		), composefs.TarOptions{})
		if root.Mode != composefs.TypeDir|0o1750 || root.UID != 5 || root.GID != 6 || root.Mtime != tarTS(rootTime) {
			t.Errorf("root: mode %o uid %d gid %d mtime %v; want the ./ member's", root.Mode, root.UID, root.GID, root.Mtime)
		}
		if got := string(tarLookup(t, root, "abs").Content); got != "absolute" {
			t.Errorf("/abs content %q", got)
		}
		tarLookup(t, root, "a/b")
		tarLookup(t, root, "c/d/e")
		for _, p := range []string{"a", "c"} {
			n := tarLookup(t, root, p)
			if n.Mode != composefs.TypeDir|0o755 || n.UID != 0 || n.GID != 0 || n.Mtime != (composefs.Timespec{}) || len(n.Xattrs) != 0 {
				t.Errorf("implicit dir /%s: mode %o uid %d gid %d mtime %v xattrs %v", p, n.Mode, n.UID, n.GID, n.Mtime, n.Xattrs)
			}
		}
		if names := tarChildNames(root); strings.Join(names, ",") != "a,abs,c" {
			t.Errorf("root children %v", names)
		}
	})
	t.Run("no root member", func(t *testing.T) {
		root := mustBuildTar(t, tarBytes(t, treg("f", "x", 0o644)), composefs.TarOptions{})
		if root.Mode != composefs.TypeDir|0o755 || root.UID != 0 || root.GID != 0 || root.Mtime != (composefs.Timespec{}) {
			t.Errorf("root without a member: mode %o uid %d mtime %v", root.Mode, root.UID, root.Mtime)
		}
	})
	t.Run("implicit parent set later", func(t *testing.T) {
		root := mustBuildTar(t, tarBytes(t,
			treg("x/y/z", "deep", 0o644),
			tmMtime(tmOwned(tdir("x/", 0o711), 7, 8), rootTime).with("SCHILY.xattr.user.dir", "1"),
		), composefs.TarOptions{})
		x := tarLookup(t, root, "x")
		if x.Mode != composefs.TypeDir|0o711 || x.UID != 7 || x.GID != 8 || x.Mtime != tarTS(rootTime) || tarXattrs(x)["user.dir"] != "1" {
			t.Errorf("/x: mode %o uid %d gid %d mtime %v xattrs %v: want the later member's", x.Mode, x.UID, x.GID, x.Mtime, x.Xattrs)
		}
		tarLookup(t, root, "x/y/z")
	})
	t.Run("duplicates", func(t *testing.T) {
		root := mustBuildTar(t, tarBytes(t,
			treg("f", "first", 0o644),
			treg("f", "second!", 0o600),
			tdir("d/", 0o700).with("SCHILY.xattr.user.a", "1", "SCHILY.xattr.user.both", "first",
				"SCHILY.xattr.system.posix_acl_access", tarACLBytes([3]uint32{1, 7, 0}, [3]uint32{2, 7, 5}, [3]uint32{4, 7, 0}, [3]uint32{0x10, 7, 0}, [3]uint32{0x20, 0, 0})),
			treg("d/c", "child", 0o644),
			tmOwned(tdir("d/", 0o750), 3, 4).with("SCHILY.xattr.user.b", "2", "SCHILY.xattr.user.both", "second"),
			tsym("s", "d"),
			tdir("s/", 0o755),
			treg("s/inside", "now a real dir", 0o644),
			tdir("e/", 0o755),
			treg("e", "file over dir", 0o644),
			tdir("e2/", 0o755),
			treg("e2", "file", 0o644),
			tdir("e2/", 0o700),
			treg("l", "x", 0o644),
			tsym("l", "/etc/passwd"),
		), composefs.TarOptions{})
		if f := tarLookup(t, root, "f"); string(f.Content) != "second!" || f.Mode != composefs.TypeRegular|0o600 {
			t.Errorf("/f: %q mode %o: want the second member", f.Content, f.Mode)
		}
		d := tarLookup(t, root, "d")
		if d.Mode != composefs.TypeDir|0o750 || d.UID != 3 || d.GID != 4 || !maps.Equal(tarXattrs(d), map[string]string{"user.a": "1", "user.b": "2", "user.both": "second"}) {
			t.Errorf("/d: mode %o uid %d xattrs %q: want the second member's metadata and both members' xattrs", d.Mode, d.UID, d.Xattrs)
		}
		tarLookup(t, root, "d/c")
		if s := tarLookup(t, root, "s"); !s.IsDir() {
			t.Errorf("/s: mode %o, want the directory that replaced the symlink", s.Mode)
		}
		tarLookup(t, root, "s/inside")
		if e := tarLookup(t, root, "e"); !e.IsRegular() || string(e.Content) != "file over dir" {
			t.Errorf("/e: mode %o children %d", e.Mode, len(e.Children))
		}
		if e2 := tarLookup(t, root, "e2"); !e2.IsDir() || len(e2.Children) != 0 || e2.Mode != composefs.TypeDir|0o700 {
			t.Errorf("/e2: mode %o children %v: want a new empty directory", e2.Mode, tarChildNames(e2))
		}
		if l := tarLookup(t, root, "l"); !l.IsSymlink() || l.Payload != "/etc/passwd" || l.Size != uint64(len("/etc/passwd")) {
			t.Errorf("/l: mode %o payload %q", l.Mode, l.Payload)
		}
	})
}

func tarChildNames(n *composefs.Node) []string {
	var out []string
	for _, c := range n.Children {
		out = append(out, c.Name)
	}
	return out
}

func TestBuildFromTarHardlinks(t *testing.T) {
	big := strings.Repeat("0123456789", 20)
	when := time.Unix(1700000123, 987654321)
	root := mustBuildTar(t, tarBytes(t,
		tmMtime(tmOwned(treg("t", big, 0o4750), 3, 4), when).with("SCHILY.xattr.user.x", "1", "SCHILY.xattr.trusted.y", "2"),
		tmOwned(tmMtime(thard("dir/h", "./t"), time.Unix(5, 0)), 9, 9), // own metadata ignored
		treg("small", "tiny", 0o644),
		thard("hsmall", "/small"),
		tsym("sl", "/etc/x"),
		thard("hsl", "sl"),
		tdev("null", tar.TypeChar, 1, 3, 0o666),
		thard("hnull", "null"),
		thard("t", "t"), // link to itself: nothing changes
		treg("small", "replaced", 0o644),
	), composefs.TarOptions{})
	tn, h := tarLookup(t, root, "t"), tarLookup(t, root, "dir/h")
	if h == tn || h.IsHardlink() || h.Nlink != 1 {
		t.Fatalf("/dir/h is not an independent node (link %v, nlink %d)", h.Link, h.Nlink)
	}
	if h.Mode != composefs.TypeRegular|0o4750 || h.UID != 3 || h.GID != 4 || h.Mtime != tarTS(when) || h.Size != uint64(len(big)) {
		t.Errorf("/dir/h: mode %o uid %d gid %d mtime %v size %d: want the target's", h.Mode, h.UID, h.GID, h.Mtime, h.Size)
	}
	want := fsverity.DigestBytes([]byte(big))
	if h.Digest == nil || *h.Digest != want || h.Payload != want.ObjectPath() || *tn.Digest != want {
		t.Errorf("/dir/h digest %v payload %q, want %s", h.Digest, h.Payload, want)
	}
	if xm := tarXattrs(h); len(xm) != 2 || xm["user.x"] != "1" || xm["trusted.y"] != "2" {
		t.Errorf("/dir/h xattrs %v", h.Xattrs)
	}
	if &h.Xattrs[0] == &tn.Xattrs[0] || h.Digest == tn.Digest {
		t.Error("/dir/h shares xattr or digest storage with /t")
	}
	if hs := tarLookup(t, root, "hsmall"); string(hs.Content) != "tiny" {
		t.Errorf("/hsmall content %q: want the content /small had when linked", hs.Content)
	}
	if s := tarLookup(t, root, "small"); string(s.Content) != "replaced" {
		t.Errorf("/small content %q", s.Content)
	}
	if hsl := tarLookup(t, root, "hsl"); !hsl.IsSymlink() || hsl.Payload != "/etc/x" {
		t.Errorf("/hsl: mode %o payload %q: want a copy of the symlink", hsl.Mode, hsl.Payload)
	}
	if hn := tarLookup(t, root, "hnull"); hn.Type() != composefs.TypeChar || hn.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("/hnull: mode %o rdev %d", hn.Mode, hn.Rdev)
	}
	if tn.IsHardlink() || !tn.IsRegular() {
		t.Errorf("/t after a link to itself: mode %o", tn.Mode)
	}
}

func TestBuildFromTarMetadata(t *testing.T) {
	when := time.Unix(1700000123, 987654321)
	archive := tarBytes(t,
		tmMtime(tdir("./", 0o755), when),
		treg("allbits", "x", 0o7777),
		treg("noperm", "x", 0),
		tmMtime(treg("ns", "x", 0o644), when),
		tmMtime(treg("old", "x", 0o644), time.Unix(-5, 500)),
		tmOwned(treg("ids", "x", 0o644), 1<<32-2, 65534),
		func() tm { m := tsym("sym", "target"); m.hdr.Mode = 0o755; return tmOwned(m, 1000, 100) }(),
		tdev("fifo", tar.TypeFifo, 0, 0, 0o640),
		tdev("dev/big", tar.TypeChar, 300, 70000, 0o600),
		tdev("dev/max", tar.TypeBlock, 4095, 1<<20-1, 0o660),
		tdev("dev/wh", tar.TypeChar, 0, 0, 0),
		treg("empty", "", 0o644),
		treg("inline64", strings.Repeat("i", 64), 0o644),
		treg("object65", strings.Repeat("o", 65), 0o644),
	)
	root := mustBuildTar(t, archive, composefs.TarOptions{})
	check := func(p string, mode uint32) *composefs.Node {
		t.Helper()
		n := tarLookup(t, root, p)
		if n.Mode != mode {
			t.Errorf("/%s: mode %o, want %o", p, n.Mode, mode)
		}
		return n
	}
	check("allbits", composefs.TypeRegular|0o7777)
	check("noperm", composefs.TypeRegular)
	if n := check("ns", composefs.TypeRegular|0o644); n.Mtime != tarTS(when) {
		t.Errorf("/ns mtime %v, want %v", n.Mtime, tarTS(when))
	}
	if n := check("old", composefs.TypeRegular|0o644); n.Mtime != tarTS(time.Unix(-5, 500)) {
		t.Errorf("/old mtime %v", n.Mtime)
	}
	if n := check("ids", composefs.TypeRegular|0o644); n.UID != 1<<32-2 || n.GID != 65534 {
		t.Errorf("/ids uid %d gid %d", n.UID, n.GID)
	}
	if n := check("sym", composefs.TypeSymlink|0o777); n.UID != 1000 || n.GID != 100 || n.Payload != "target" || n.Size != 6 {
		t.Errorf("/sym uid %d gid %d payload %q size %d", n.UID, n.GID, n.Payload, n.Size)
	}
	check("fifo", composefs.TypeFifo|0o640)
	if n := check("dev/big", composefs.TypeChar|0o600); n.Rdev != unix.Mkdev(300, 70000) {
		t.Errorf("/dev/big rdev %#x, want %#x", n.Rdev, unix.Mkdev(300, 70000))
	}
	if n := check("dev/max", composefs.TypeBlock|0o660); n.Rdev != unix.Mkdev(4095, 1<<20-1) {
		t.Errorf("/dev/max rdev %#x, want %#x", n.Rdev, unix.Mkdev(4095, 1<<20-1))
	}
	if n := check("dev/wh", composefs.TypeChar); !n.IsWhiteout() {
		t.Errorf("/dev/wh is not a whiteout (rdev %d)", n.Rdev)
	}
	if n := check("empty", composefs.TypeRegular|0o644); n.Size != 0 || n.Content != nil || n.Digest != nil || n.Payload != "" {
		t.Errorf("/empty: size %d content %v digest %v payload %q", n.Size, n.Content, n.Digest, n.Payload)
	}
	if n := check("inline64", composefs.TypeRegular|0o644); string(n.Content) != strings.Repeat("i", 64) || n.Payload != "" || n.HasExternalData() {
		t.Errorf("/inline64: content %q payload %q", n.Content, n.Payload)
	}
	d := fsverity.DigestBytes([]byte(strings.Repeat("o", 65)))
	if n := check("object65", composefs.TypeRegular|0o644); n.Content != nil || n.Digest == nil || *n.Digest != d || n.Payload != d.ObjectPath() || n.Size != 65 {
		t.Errorf("/object65: content %q digest %v payload %q size %d", n.Content, n.Digest, n.Payload, n.Size)
	}

	t.Run("UseEpoch", func(t *testing.T) {
		root := mustBuildTar(t, tarBytes(t, tmMtime(tdir("./", 0o755), when), tmMtime(treg("a/ns", "x", 0o644), when), tmMtime(tsym("s", "x"), when)), composefs.TarOptions{UseEpoch: true})
		root.Walk(func(p string, n *composefs.Node) error {
			if n.Mtime != (composefs.Timespec{}) {
				t.Errorf("%s: mtime %v with UseEpoch", p, n.Mtime)
			}
			return nil
		})
	})
	t.Run("SkipDevices", func(t *testing.T) {
		root := mustBuildTar(t, append(archive[:len(archive)-1024:len(archive)-1024], tarBytes(t, thard("dev/hl", "dev/big"))...), composefs.TarOptions{SkipDevices: true})
		if names := tarChildNames(tarLookup(t, root, "dev")); len(names) != 0 {
			t.Errorf("/dev has %v with SkipDevices", names)
		}
		tarLookup(t, root, "fifo")
	})
}

func TestBuildFromTarXattrs(t *testing.T) {
	archive := tarBytes(t,
		treg("f", "x", 0o644).with(
			"SCHILY.xattr.user.with%3Dequals", "a=b",
			"SCHILY.xattr.user.pct%25", "percent",
			"SCHILY.xattr.user.bin", "\x00\xff\n",
			"SCHILY.xattr.user.empty", "",
			"SCHILY.xattr.trusted.overlay.redirect", "/x",
			"SCHILY.xattr.security.selinux", "system_u:object_r:etc_t:s0\x00",
			"SCHILY.xattr.com.apple.quarantine", "q",
			"SCHILY.xattr.user.", "no name",
			"LIBARCHIVE.xattr.user.lib", "eA==",
		),
		tsym("s", "f").with("SCHILY.xattr.trusted.t", "kept", "SCHILY.xattr.user.u", "dropped", "SCHILY.xattr.security.selinux", "l"),
		tdev("p", tar.TypeFifo, 0, 0, 0o600).with("SCHILY.xattr.user.u", "dropped", "SCHILY.xattr.trusted.t", "kept"),
		tdir("d/", 0o755).with("SCHILY.xattr.user.d", "kept"),
	)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	root := mustBuildTar(t, archive, composefs.TarOptions{Logger: logger})
	want := map[string]map[string]string{
		"f": {
			"user.with=equals": "a=b", "user.pct%": "percent", "user.bin": "\x00\xff\n", "user.empty": "",
			"trusted.overlay.redirect": "/x", "security.selinux": "system_u:object_r:etc_t:s0\x00",
		},
		"s": {"trusted.t": "kept", "security.selinux": "l"},
		"p": {"trusted.t": "kept"},
		"d": {"user.d": "kept"},
	}
	for p, w := range want {
		n := tarLookup(t, root, p)
		if got := tarXattrs(n); !maps.Equal(got, w) {
			t.Errorf("/%s xattrs %q, want %q", p, got, w)
		}
		if !slices.IsSortedFunc(n.Xattrs, func(a, b composefs.Xattr) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("/%s xattrs not sorted by name", p)
		}
	}
	for _, dropped := range []string{"com.apple.quarantine", "xattr=user.u"} {
		if !strings.Contains(logs.String(), dropped) {
			t.Errorf("no warning about dropping %s in the log:\n%s", dropped, logs.String())
		}
	}

	root = mustBuildTar(t, archive, composefs.TarOptions{UserXattrs: true})
	if got := tarXattrs(tarLookup(t, root, "s")); len(got) != 0 {
		t.Errorf("UserXattrs: /s has %v", got)
	}
	if got := tarXattrs(tarLookup(t, root, "f")); len(got) != 4 || got["user.bin"] != "\x00\xff\n" {
		t.Errorf("UserXattrs: /f has %q", got)
	}
	root = mustBuildTar(t, archive, composefs.TarOptions{SkipXattrs: true})
	root.Walk(func(p string, n *composefs.Node) error {
		if len(n.Xattrs) != 0 {
			t.Errorf("SkipXattrs: %s has %v", p, n.Xattrs)
		}
		return nil
	})
}

// tarACLBytes encodes ACL entries (tag, perm, id) in the kernel's xattr form.
func tarACLBytes(entries ...[3]uint32) string {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return string(b)
}

func TestBuildFromTarACLs(t *testing.T) {
	const none = 0xffffffff
	// Tags: USER_OBJ 1, USER 2, GROUP_OBJ 4, GROUP 8, MASK 0x10, OTHER 0x20.
	fileACL := tarACLBytes([3]uint32{1, 6, none}, [3]uint32{2, 5, 1000}, [3]uint32{4, 4, none}, [3]uint32{0x10, 5, none}, [3]uint32{0x20, 0, none})
	dirDefault := tarACLBytes([3]uint32{1, 7, none}, [3]uint32{4, 5, none}, [3]uint32{8, 7, 100}, [3]uint32{0x10, 7, none}, [3]uint32{0x20, 5, none})
	archive := tarBytes(t,
		// Text only, unsorted, with comments: converted.
		treg("text", "x", 0o644).with("SCHILY.acl.access", "user::rw-\ngroup::r--\nmask::r-x\t#effective\nuser:1000:r-x\nother::---\n"),
		tdir("textdir/", 0o755).with("SCHILY.acl.default", "u::rwx,g::r-x,g:100:rwx,m::rwx,o::r-x"),
		// Binary wins over text; ids of unnamed entries are normalised.
		treg("bin", "x", 0o600).with(
			"SCHILY.xattr.system.posix_acl_access", tarACLBytes([3]uint32{1, 6, 0}, [3]uint32{2, 5, 1000}, [3]uint32{4, 4, 7}, [3]uint32{0x10, 5, 0}, [3]uint32{0x20, 0, 0}),
			"SCHILY.acl.access", "user::rwx,group::rwx,other::rwx"),
		// A minimal ACL only sets the mode.
		treg("minimal", "x", 0o777).with("SCHILY.xattr.system.posix_acl_access", tarACLBytes([3]uint32{1, 4, none}, [3]uint32{4, 0, none}, [3]uint32{0x20, 1, none})),
		// Where Linux has no such ACL, it is left out.
		treg("deffile", "x", 0o644).with("SCHILY.xattr.system.posix_acl_default", dirDefault),
		tsym("sym", "x").with("SCHILY.xattr.system.posix_acl_access", fileACL),
		// An empty ACL is no ACL.
		treg("emptyacl", "x", 0o644).with("SCHILY.xattr.system.posix_acl_access", tarACLBytes()),
	)
	for _, opts := range []composefs.TarOptions{{}, {SkipXattrs: true}} {
		root := mustBuildTar(t, archive, opts)
		check := func(p string, mode uint32, xattrs map[string]string) {
			t.Helper()
			n := tarLookup(t, root, p)
			if n.Mode != mode {
				t.Errorf("/%s: mode %o, want %o", p, n.Mode, mode)
			}
			if opts.SkipXattrs {
				xattrs = map[string]string{}
			}
			if got := tarXattrs(n); !maps.Equal(got, xattrs) {
				t.Errorf("/%s (SkipXattrs %v): xattrs %q, want %q", p, opts.SkipXattrs, got, xattrs)
			}
		}
		check("text", composefs.TypeRegular|0o650, map[string]string{"system.posix_acl_access": fileACL})
		check("textdir", composefs.TypeDir|0o755, map[string]string{"system.posix_acl_default": dirDefault})
		check("bin", composefs.TypeRegular|0o650, map[string]string{"system.posix_acl_access": fileACL})
		check("minimal", composefs.TypeRegular|0o401, map[string]string{})
		check("deffile", composefs.TypeRegular|0o644, map[string]string{})
		check("sym", composefs.TypeSymlink|0o777, map[string]string{})
		check("emptyacl", composefs.TypeRegular|0o644, map[string]string{})
	}
}

// tarStoreFiles lists every file (objects and temporaries alike) below dir.
func tarStoreFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == dir {
			return nil
		}
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBuildFromTarTruncated cuts archives at several places: the error
// names the member, matches io.ErrUnexpectedEOF, and the store holds no
// temporary file and no object but those of members read completely.
func TestBuildFromTarTruncated(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000)
	big = append(big, "tail not a multiple of 512"...)
	archive := tarBytes(t,
		tdir("./", 0o755),
		treg("small", "just a few bytes of content here", 0o644),
		treg("big", string(big), 0o644),
	)
	bigStart := bytes.Index(archive, big)
	smallStart := bytes.Index(archive, []byte("just a few"))
	end := len(archive) - 1024 // where the end-of-archive marker starts
	complete := map[string]bool{fsverity.DigestBytes(big).ObjectPath(): true}

	largeDir := filepath.Join(testutil.GoldenDir(t), "large")
	largeTar, err := os.ReadFile(filepath.Join(largeDir, "tree.tar"))
	if err != nil {
		t.Fatal(err)
	}
	for p := range readObjectDigests(t, filepath.Join(largeDir, "object-digests.txt")) {
		complete[p] = true
	}
	sparseAt := bytes.Index(largeTar, []byte("GNU.sparse.name=./sparse-64MiB-plus1"))
	if sparseAt < 0 {
		t.Fatal("sparse member not found in large/tree.tar")
	}
	tests := []struct {
		name   string
		data   []byte
		member string // TarError.Name; "" for errors outside a member
		index  int    // 0: not a *TarError
	}{
		{"mid object", archive[:bigStart+300000], "big", 3},
		{"object data complete, padding cut", archive[:bigStart+len(big)], "", 0},
		{"mid inline file", archive[:smallStart+5], "small", 2},
		{"mid header", archive[:bigStart-512+100], "", 3},
		{"at a member boundary", archive[:end], "", 0},
		{"sparse member", largeTar[:sparseAt+4096], "./sparse-64MiB-plus1", 5},
		{"empty input", nil, "", 0},
	}
	for _, tc := range tests {
		for _, withStore := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/store=%v", tc.name, withStore), func(t *testing.T) {
				var opts composefs.TarOptions
				storeDir := filepath.Join(t.TempDir(), "objects")
				if withStore {
					s, err := objstore.Open(storeDir)
					if err != nil {
						t.Fatal(err)
					}
					opts.Store = s
				}
				_, err := buildTar(t, tc.data, opts)
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
				}
				if errors.Is(err, composefs.ErrInvalid) {
					t.Errorf("truncation %v classified as ErrInvalid", err)
				}
				var te *composefs.TarError
				switch {
				case tc.index == 0:
					if errors.As(err, &te) {
						t.Errorf("error %v is about member %q, want the archive's end", err, te.Name)
					}
				case !errors.As(err, &te):
					t.Errorf("error %v is not a *TarError", err)
				case te.Name != tc.member || te.Index != tc.index:
					t.Errorf("error names member %q #%d, want %q #%d", te.Name, te.Index, tc.member, tc.index)
				case tc.member != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.member)):
					t.Errorf("error %q does not name %q", err, tc.member)
				}
				for _, f := range tarStoreFiles(t, storeDir) {
					rel, _ := filepath.Rel(storeDir, f)
					if !complete[rel] {
						t.Errorf("store holds %s, not the object of a complete member", rel)
					}
				}
			})
		}
	}
	// The same archive, whole, builds; one zero block is enough of an
	// end (GNU tar accepts a lone zero block too).
	mustBuildTar(t, archive, composefs.TarOptions{})
	mustBuildTar(t, archive[:end+512], composefs.TarOptions{})
}

// tarCancelReader cancels a context once n bytes have been read.
type tarCancelReader struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *tarCancelReader) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	if c.n -= m; c.n <= 0 {
		c.cancel()
	}
	return m, err
}

func TestBuildFromTarCancel(t *testing.T) {
	big := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 300000)
	archive := tarBytes(t, treg("big", string(big), 0o644), treg("after", "x", 0o644))
	storeDir := filepath.Join(t.TempDir(), "objects")
	store, err := objstore.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &tarCancelReader{r: bytes.NewReader(archive), n: len(big) / 2, cancel: cancel}
	_, err = composefs.BuildFromTar(ctx, iotest.HalfReader(r), composefs.TarOptions{Store: store})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if files := tarStoreFiles(t, storeDir); len(files) != 0 {
		t.Errorf("store holds %v after a cancelled build", files)
	}
}

func TestBuildFromTarOptions(t *testing.T) {
	archive := tarBytes(t, treg("f", "x", 0o644))
	if _, err := buildTar(t, archive, composefs.TarOptions{SkipXattrs: true, UserXattrs: true}); !errors.Is(err, composefs.ErrBuildOptions) {
		t.Errorf("SkipXattrs+UserXattrs: error %v, want ErrBuildOptions", err)
	}
	if _, err := composefs.BuildFromTar(context.Background(), nil, composefs.TarOptions{}); !errors.Is(err, composefs.ErrBuildOptions) {
		t.Errorf("nil reader: error %v, want ErrBuildOptions", err)
	}
}

// TestBuildFromTarStore: content larger than 64 bytes lands in the store
// under its digest, read in small pieces; identical content is stored
// once; an all-inline archive creates no store directory.
func TestBuildFromTarStore(t *testing.T) {
	a := bytes.Repeat([]byte("A"), 3*fsverity.BlockSize+17)
	b := make([]byte, 5*fsverity.BlockSize) // zeros: stored as holes
	b[len(b)-1] = 1
	archive := tarBytes(t, treg("a", string(a), 0o644), treg("a2", string(a), 0o600), treg("b", string(b), 0o644), treg("small", "s", 0o644))
	storeDir := filepath.Join(t.TempDir(), "objects")
	store, err := objstore.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := composefs.BuildFromTar(context.Background(), iotest.OneByteReader(bytes.NewReader(archive)), composefs.TarOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	da, db := fsverity.DigestBytes(a), fsverity.DigestBytes(b)
	for p, d := range map[string]fsverity.Digest{"a": da, "a2": da, "b": db} {
		if n := tarLookup(t, root, p); n.Digest == nil || *n.Digest != d || n.Payload != d.ObjectPath() {
			t.Errorf("/%s: digest %v payload %q, want %s", p, n.Digest, n.Payload, d)
		}
	}
	files := tarStoreFiles(t, storeDir)
	slices.Sort(files)
	want := []string{store.Path(da), store.Path(db)}
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("store files %v, want %v", files, want)
	}
	for _, d := range []fsverity.Digest{da, db} {
		if err := store.Verify(context.Background(), d); err != nil {
			t.Error(err)
		}
	}

	inlineStore := filepath.Join(t.TempDir(), "objects")
	s2, err := objstore.Open(inlineStore)
	if err != nil {
		t.Fatal(err)
	}
	mustBuildTar(t, tarBytes(t, treg("x", strings.Repeat("x", 64), 0o644)), composefs.TarOptions{Store: s2})
	if _, err := os.Lstat(inlineStore); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("all-inline archive created the store directory (lstat: %v)", err)
	}
}

// TestBuildFromTarMatchesExtraction extracts an archive with GNU tar (as
// root, the way the golden trees were made) and checks that BuildFromDir
// of the result and BuildFromTar of the archive give the same tree and the
// same image, for every option set. The archive has what the golden trees
// lack: text-only ACLs (converted by tar and the kernel), a replaced file,
// a repeated directory, a symlink replaced by a directory, xattrs that
// Linux refuses (dropped by both), a hardlink to a symlink and to a
// device.
func TestBuildFromTarMatchesExtraction(t *testing.T) {
	testutil.RequireRoot(t)
	gnuTar := testutil.RequireTool(t, "tar")
	when := time.Unix(1700000123, 987654321)
	archive := tarBytes(t,
		tmMtime(tdir("./", 0o755), when),
		tdir("etc/", 0o755),
		treg("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+strings.Repeat("#\n", 50), 0o644),
		tmOwned(tmMtime(treg("etc/small", "tiny", 0o640), when), 1000, 100),
		tdir("bin/", 0o755),
		treg("bin/sh", strings.Repeat("ELF", 2000), 0o4755),
		thard("bin/bash", "bin/sh"),
		tdir("usr/", 0o755),
		tdir("usr/bin/", 0o755),
		tsym("usr/bin/foo", "/bin/sh"),
		tsym("lnk-rel", "etc/passwd"),
		thard("hard-sym", "lnk-rel"),
		tdev("fifo", tar.TypeFifo, 0, 0, 0o600).with("SCHILY.xattr.user.refused", "1", "SCHILY.xattr.trusted.ok", "1"),
		tdir("dev/", 0o755),
		tdev("dev/null", tar.TypeChar, 1, 3, 0o666),
		tmOwned(tdev("dev/sda", tar.TypeBlock, 8, 0, 0o660), 0, 6),
		tdev("dev/big", tar.TypeChar, 300, 70000, 0o600),
		thard("dev/null2", "dev/null"),
		tdev("dev/wh", tar.TypeChar, 0, 0, 0),
		treg("dup", "first version of the file", 0o644),
		treg("dup", "second", 0o600),
		tdir("x/", 0o755).with("SCHILY.xattr.user.a", "1", "SCHILY.xattr.trusted.b", "2"),
		treg("x/f", strings.Repeat("x", 100), 0o644).with(
			"SCHILY.xattr.user.bin", "\x00\xff",
			"SCHILY.xattr.user.with%3Deq", "v",
			"SCHILY.xattr.security.selinux", "system_u:object_r:etc_t:s0\x00",
			"SCHILY.xattr.com.apple.quarantine", "0081;5",
		),
		tsym("x/s", "f").with("SCHILY.xattr.trusted.t", "on a symlink"),
		tmMtime(tdir("m/", 0o700), when).with("SCHILY.xattr.user.first", "1", "SCHILY.xattr.trusted.both", "first"),
		treg("m/c", "child", 0o644),
		tmOwned(tdir("m/", 0o750), 5, 5).with("SCHILY.xattr.user.second", "2", "SCHILY.xattr.trusted.both", "second"),
		tdir("m2/", 0o770).with("SCHILY.acl.access", "user::rwx\ngroup::rwx\ngroup:100:r-x\nmask::rwx\nother::---\n",
			"SCHILY.acl.default", "user::rwx\ngroup::r-x\nother::---\n"),
		tdir("m2/", 0o750),
		tsym("sd", "etc"),
		tdir("sd/", 0o711),
		tdir("g/", 0o755),
		treg("g", "file over an empty directory", 0o644),
		treg("acl-text", "x", 0o650).with("SCHILY.acl.access", "user::rw-\nuser:1000:r-x\ngroup::r--\nmask::r-x\nother::---\n"),
		tdir("acl-text-dir/", 0o775).with(
			"SCHILY.acl.access", "user::rwx\ngroup::r-x\ngroup:100:rwx\nmask::rwx\nother::r-x\n",
			"SCHILY.acl.default", "user::rwx\nuser:1000:r-x\ngroup::r-x\nmask::r-x\nother::r-x\n"),
		// Binary and text, as GNU tar writes them. (With --acls, GNU
		// tar replaces a binary access ACL that has no text twin by the
		// mode's minimal ACL, i.e. removes it; BuildFromTar keeps it, as
		// tar without --acls does.)
		treg("acl-bin", strings.Repeat("b", 65), 0o674).with(
			"SCHILY.xattr.system.posix_acl_access", tarACLBytes([3]uint32{1, 6, 0xffffffff}, [3]uint32{2, 7, 1000}, [3]uint32{4, 4, 0xffffffff}, [3]uint32{0x10, 7, 0xffffffff}, [3]uint32{0x20, 4, 0xffffffff}),
			"SCHILY.acl.access", "user::rw-\nuser:1000:rwx\ngroup::r--\nmask::rwx\nother::r--\n"),
	)
	compareWithGNUTar(t, gnuTar, archive, "--acls")

	// Binary ACLs without their text twins: GNU tar --acls drops them
	// (it sets the text ACL or, lacking one, the mode's minimal ACL);
	// BuildFromTar keeps them, as GNU tar without --acls does.
	binACLs := tarBytes(t,
		tdir("./", 0o755),
		treg("acl-bin", strings.Repeat("b", 65), 0o674).with(
			"SCHILY.xattr.system.posix_acl_access", tarACLBytes([3]uint32{1, 6, 0xffffffff}, [3]uint32{2, 7, 1000}, [3]uint32{4, 4, 0xffffffff}, [3]uint32{0x10, 7, 0xffffffff}, [3]uint32{0x20, 4, 0xffffffff})),
		tdir("acl-bin-dir/", 0o755).with(
			"SCHILY.xattr.system.posix_acl_default", tarACLBytes([3]uint32{1, 7, 0xffffffff}, [3]uint32{4, 5, 0xffffffff}, [3]uint32{8, 5, 100}, [3]uint32{0x10, 5, 0xffffffff}, [3]uint32{0x20, 0, 0xffffffff})),
	)
	compareWithGNUTar(t, gnuTar, binACLs)
}

// compareWithGNUTar extracts the archive with GNU tar as root and compares
// BuildFromDir of the result with BuildFromTar, for every option set.
func compareWithGNUTar(t *testing.T, gnuTar string, archive []byte, flags ...string) {
	t.Helper()
	tarFile := filepath.Join(t.TempDir(), "test.tar")
	if err := os.WriteFile(tarFile, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := append([]string{"--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tarFile, "-C", dir}, flags...)
	cmd := exec.Command(gnuTar, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, out)
	}
	t.Logf("GNU tar says:\n%s", out)

	for _, opts := range []composefs.TarOptions{{}, {UseEpoch: true}, {SkipDevices: true}, {UserXattrs: true}, {SkipXattrs: true}} {
		name := fmt.Sprintf("flags=%v/epoch=%v,skipdev=%v,user=%v,skipx=%v", flags, opts.UseEpoch, opts.SkipDevices, opts.UserXattrs, opts.SkipXattrs)
		t.Run(name, func(t *testing.T) {
			fromDir, err := composefs.BuildFromDir(context.Background(), dir, composefs.BuildOptions{
				UseEpoch: opts.UseEpoch, SkipXattrs: opts.SkipXattrs, UserXattrs: opts.UserXattrs, SkipDevices: opts.SkipDevices,
			})
			if err != nil {
				t.Fatal(err)
			}
			fromTar := mustBuildTar(t, archive, opts)
			got, want := describe(fromTar), describe(fromDir)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("BuildFromTar differs from BuildFromDir of the extracted tree:\n%s", diffLines(got, want))
			}
			var a, b bytes.Buffer
			if _, err := erofs.Write(&a, fromTar, erofs.DefaultWriteOptions()); err != nil {
				t.Fatal(err)
			}
			if _, err := erofs.Write(&b, fromDir, erofs.DefaultWriteOptions()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Error("images differ")
			}
		})
	}
}

// FuzzBuildFromTar: no archive makes BuildFromTar panic, and whatever it
// accepts is a valid tree the EROFS writer takes.
func FuzzBuildFromTar(f *testing.F) {
	f.Add(tarBytes(f, tdir("./", 0o755), treg("a/b", "x", 0o644), tsym("s", "/etc"), thard("h", "a/b")))
	f.Add(tarBytes(f, treg("f", strings.Repeat("y", 100), 0o644).with(
		"SCHILY.acl.access", "user::rw-,user:1000:r-x,group::r--,mask::r-x,other::---",
		"SCHILY.xattr.user.a%3Db", "v", "SCHILY.xattr.system.posix_acl_default", tarACLBytes([3]uint32{1, 7, 0})),
		tdir("d/", 0o755), tdev("d/c", tar.TypeChar, 1, 3, 0o600), tdir("d/", 0o700)))
	f.Add(rawTarArchive(rawPAXMember("p", tar.TypeReg, string(rawPad512([]byte("1\n0\n1\n")))+"Z",
		"GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", "sparse", "GNU.sparse.realsize", "70")))
	f.Fuzz(func(t *testing.T, archive []byte) {
		// A few bytes can declare a sparse member of terabytes, which
		// takes as long to hash: give up on those.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		root, err := composefs.BuildFromTar(ctx, bytes.NewReader(archive), composefs.TarOptions{})
		if err != nil {
			return
		}
		if err := root.Validate(); err != nil {
			t.Fatalf("accepted tree does not validate: %v", err)
		}
		if _, err := erofs.Write(io.Discard, root, erofs.DefaultWriteOptions()); err != nil {
			t.Fatalf("accepted tree is not writable: %v", err)
		}
	})
}
