package dump

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cfs-dev/cfs/composefs"
)

const rootLine = "/ 4096 40755 2 0 0 0 0.0 - - -\n"

func parseString(s string, opts ParseOptions) (*composefs.Node, error) {
	return Parse(strings.NewReader(s), opts)
}

func mustParse(t *testing.T, s string) *composefs.Node {
	t.Helper()
	root, err := parseString(s, ParseOptions{})
	if err != nil {
		t.Fatalf("Parse: %v\ninput:\n%s", err, clip(s))
	}
	return root
}

func lookup(t *testing.T, root *composefs.Node, path string) *composefs.Node {
	t.Helper()
	n := lookupPath(root, path)
	if n == nil {
		t.Fatalf("%s not in the tree", path)
	}
	return n
}

func TestParseFields(t *testing.T) {
	digest := "8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f"
	root := mustParse(t, "/ 4096 40755 3 1 2 0 1700000000.5 - - - user.root=r\n"+
		"/dir 0 40700 2 0 0 0 0.0 - - -\n"+
		"/dir/file 300 100644 3 1000 100 0 1700000001.500000000 8b/5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f - "+digest+" user.a=1 trusted.b=\\x00\\xff\n"+
		"/inline 5 104755 1 100000 70000 0 5000000000.999999999 - hello -\n"+
		"/chr 0 20644 1 0 0 1234 0.0 - - -\n"+
		"/blk 0 60600 1 0 0 20015998343868 0.0 - - -\n"+
		"/fifo 0 10644 1 0 0 77 0.0 - - -\n"+
		"/sock 0 140755 1 0 0 0 0.0 - - -\n"+
		"/link 999 120777 1 0 0 0 0.0 ../target - -\n")

	if root.Mode != 0o40755 || root.Nlink != 3 || root.UID != 1 || root.GID != 2 || root.Mtime != (composefs.Timespec{Sec: 1700000000, Nsec: 5}) {
		t.Errorf("root = %+v", root)
	}
	if v, _ := root.GetXattr("user.root"); v != "r" {
		t.Errorf("root xattr user.root = %q", v)
	}
	f := lookup(t, root, "/dir/file")
	if f.Size != 300 || f.Mode != 0o100644 || f.Nlink != 3 || f.UID != 1000 || f.GID != 100 ||
		f.Mtime != (composefs.Timespec{Sec: 1700000001, Nsec: 500000000}) ||
		f.Payload != "8b/5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f" ||
		f.Content != nil || f.Digest == nil || f.Digest.String() != digest || !f.HasExternalData() {
		t.Errorf("/dir/file = %+v", f)
	}
	if want := []composefs.Xattr{{Name: "user.a", Value: "1"}, {Name: "trusted.b", Value: "\x00\xff"}}; !equalXattrs(f.Xattrs, want) {
		t.Errorf("/dir/file xattrs = %q, want %q", f.Xattrs, want)
	}
	in := lookup(t, root, "/inline")
	if string(in.Content) != "hello" || in.Size != 5 || in.Mode != 0o104755 || in.UID != 100000 || in.GID != 70000 ||
		in.Mtime != (composefs.Timespec{Sec: 5000000000, Nsec: 999999999}) || in.HasExternalData() {
		t.Errorf("/inline = %+v", in)
	}
	if n := lookup(t, root, "/chr"); n.Rdev != 1234 {
		t.Errorf("/chr rdev = %d", n.Rdev)
	}
	if n := lookup(t, root, "/blk"); n.Rdev != 20015998343868 {
		t.Errorf("/blk rdev = %d (kept in 64 bits; the image stores 32)", n.Rdev)
	}
	if n := lookup(t, root, "/fifo"); n.Rdev != 0 {
		t.Errorf("/fifo rdev = %d, RDEV is only kept for devices", n.Rdev)
	}
	if n := lookup(t, root, "/link"); n.Payload != "../target" || n.Size != 9 {
		t.Errorf("/link payload %q size %d, want ../target and the target length 9", n.Payload, n.Size)
	}
	var names []string
	for _, c := range root.Children {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "blk,chr,dir,fifo,inline,link,sock" {
		t.Errorf("root children = %s", got)
	}
	if err := root.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func equalXattrs(a, b []composefs.Xattr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestParseUpstreamQuirks pins the details of upstream's parser that a
// dump may rely on.
func TestParseUpstreamQuirks(t *testing.T) {
	t.Run("no trailing newline", func(t *testing.T) {
		root := mustParse(t, rootLine+"/a 0 100644 1 0 0 0 0.0 - - -\n/b 0 100644 1 0 0 0 0.0 - - -")
		lookup(t, root, "/b")
	})
	t.Run("children sorted whatever the input order", func(t *testing.T) {
		root := mustParse(t, rootLine+"/c 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n/b 0 40755 2 0 0 0 0.0 - - -\n/b/z 0 100644 1 0 0 0 0.0 - - -\n/b/y 0 100644 1 0 0 0 0.0 - - -\n")
		var paths []string
		_ = root.Walk(func(p string, _ *composefs.Node) error { paths = append(paths, p); return nil })
		if got := strings.Join(paths, " "); got != "/ /a /b /b/y /b/z /c" {
			t.Errorf("walk order %s", got)
		}
	})
	t.Run("slashes", func(t *testing.T) {
		root := mustParse(t, rootLine+"a 0 40755 2 0 0 0 0.0 - - -\n//a///b 0 100644 1 0 0 0 0.0 - - -\n")
		lookup(t, root, "/a/b")
	})
	t.Run("escaped names", func(t *testing.T) {
		root := mustParse(t, rootLine+`/\x20lead 0 100644 1 0 0 0 0.0 - - -`+"\n"+`/a\tb\nc\\d=e 0 100644 1 0 0 0 0.0 - - -`+"\n"+`/\xc3\xa9\xff 0 100644 1 0 0 0 0.0 - - -`+"\n"+`/- 0 100644 1 0 0 0 0.0 - - -`+"\n")
		for _, name := range []string{" lead", "a\tb\nc\\d=e", "é\xff", "-"} {
			if root.Lookup(name) == nil {
				t.Errorf("no entry %q", name)
			}
		}
	})
	t.Run("mode bits beyond the 16 the image stores are dropped", func(t *testing.T) {
		root := mustParse(t, rootLine+"/f 0 1100644 1 0 0 0 0.0 - - -\n/l 0 20720777 1 0 0 0 0.0 t - -\n")
		if m := lookup(t, root, "/f").Mode; m != 0o100644 {
			t.Errorf("/f mode %o", m)
		}
		if l := lookup(t, root, "/l"); l.Mode != 0o120777 || l.Payload != "t" {
			t.Errorf("/l (honggfuzz-longlink style mode) = %o %q", l.Mode, l.Payload)
		}
	})
	t.Run("strtoull numbers", func(t *testing.T) {
		root := mustParse(t, rootLine+"/f +5 100644 1 4294967295 \t7 0 -1.0 - - -\n")
		f := lookup(t, root, "/f")
		if f.Size != 5 || f.UID != 1<<32-1 || f.GID != 7 || f.Mtime.Sec != -1 {
			t.Errorf("/f = %+v", f)
		}
	})
	t.Run("symlink content ignored", func(t *testing.T) {
		root := mustParse(t, rootLine+"/l 6 120777 1 0 0 0 0.0 target abcdef -\n")
		if l := lookup(t, root, "/l"); l.Content != nil || l.Size != 6 {
			t.Errorf("/l = %+v", l)
		}
	})
	t.Run("optional fields", func(t *testing.T) {
		root := mustParse(t, rootLine+
			`/dash 1 100644 1 0 0 0 0.0 - \x2d -`+"\n"+
			`/ext 1 100644 1 0 0 0 0.0 \x2d - -`+"\n"+
			`/empty-content 0 100644 1 0 0 0 0.0 -  -`+"\n"+
			"/short 0 20644 1 0 0 0 0.0 -\n"+
			"/upper 1 100644 1 0 0 0 0.0 - - 8B5B9DB0C13DB24256C829AA364AA90C6D2EBA318B9232A4AB9313B954D3555F\n")
		if n := lookup(t, root, "/dash"); string(n.Content) != "-" || n.Payload != "" {
			t.Errorf(`/dash: content %q payload %q, want content "-"`, n.Content, n.Payload)
		}
		if n := lookup(t, root, "/ext"); n.Content != nil || n.Payload != "-" {
			t.Errorf(`/ext: content %q payload %q, want payload "-"`, n.Content, n.Payload)
		}
		if n := lookup(t, root, "/empty-content"); n.Content != nil || n.Size != 0 {
			t.Errorf("/empty-content = %+v", n)
		}
		if n := lookup(t, root, "/short"); n.Digest != nil || n.Content != nil {
			t.Errorf("/short = %+v", n)
		}
		if n := lookup(t, root, "/upper"); n.Digest == nil || n.Digest.String() != "8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f" {
			t.Errorf("/upper digest %v", n.Digest)
		}
	})
	t.Run("xattrs", func(t *testing.T) {
		root := mustParse(t, rootLine+
			`/f 0 100644 1 0 0 0 0.0 - - - user.empty= user.dup=1 user.\x3d=4 user.eq=b=c user.dup=2 user.sp=a\x20b `+"\n")
		want := []composefs.Xattr{{Name: "user.empty"}, {Name: "user.dup", Value: "2"}, {Name: "user.=", Value: "4"}, {Name: "user.eq", Value: "b=c"}, {Name: "user.sp", Value: "a b"}}
		if x := lookup(t, root, "/f").Xattrs; !equalXattrs(x, want) {
			t.Errorf("xattrs %q, want %q", x, want)
		}
	})
	t.Run("limits reached exactly", func(t *testing.T) {
		name := strings.Repeat("n", 255)
		target := strings.Repeat("t", 4095)
		content := strings.Repeat("c", 5000)
		root := mustParse(t, rootLine+
			"/"+name+" 0 100644 1 0 0 0 0.0 - - - user."+strings.Repeat("x", 250)+"=v\n"+
			"/l 0 120777 1 0 0 0 0.0 "+target+" - -\n"+
			"/c 5000 100644 1 0 0 0 0.0 - "+content+" -\n"+
			"/x 0 100644 1 0 0 0 0.0 - - - user.a="+strings.Repeat("v", 32767-12-7-6)+"\n")
		if err := root.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("long line across reads", func(t *testing.T) {
		// 300 KiB line, longer than the reader's buffer, rejected for
		// its xattr text rather than its length.
		line := "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("v", 300<<10) + "\n"
		_, err := Parse(iotest.OneByteReader(strings.NewReader(rootLine+line)), ParseOptions{})
		if err == nil || !strings.Contains(err.Error(), "line 2:") || !strings.Contains(err.Error(), "too many xattrs") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestParseHardlinks(t *testing.T) {
	root := mustParse(t, rootLine+
		"/a 300 @100644 1 0 0 0 0.0 /t - -\n"+ // target after the link
		"/b garbage @100644 x y z w bad /a \\q \\q user.ignored\n"+ // link to a link; other fields ignored
		"/t 300 100644 3 1000 1000 0 1700000000.0 8b/5b - - user.hl=yes\n"+
		"/d 0 40755 2 0 0 0 0.0 - - -\n"+
		"/d/c 0 @100644 1 0 0 0 0.0 //t - -\n"+
		"/sym 6 120777 2 0 0 0 0.0 target - -\n"+
		"/hs 0 @120777 2 0 0 0 0.0 /sym - -\n"+
		"/wh 0 20000 1 0 0 0 0.0 - - -\n"+
		"/hw 0 @20000 1 0 0 0 0.0 /wh - -\n")
	tgt := lookup(t, root, "/t")
	for _, p := range []string{"/a", "/b", "/d/c"} {
		n := lookup(t, root, p)
		if n.Link != tgt || !n.IsHardlink() || n.Target() != tgt {
			t.Errorf("%s links to %v, want /t", p, n.Link)
		}
		if len(n.Xattrs) != 0 || n.Payload != "" {
			t.Errorf("%s has its own fields: %+v", p, n)
		}
	}
	if tgt.Nlink != 3 || tgt.Link != nil {
		t.Errorf("/t nlink %d (want 3, from its own line)", tgt.Nlink)
	}
	if n := lookup(t, root, "/hs"); n.Link != lookup(t, root, "/sym") {
		t.Errorf("/hs does not link to /sym")
	}
	if n := lookup(t, root, "/hw"); n.Link != lookup(t, root, "/wh") {
		t.Errorf("/hw does not link to /wh")
	}
	if err := root.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestParseErrors: every rejection names the line and the problem, with
// the right error type.
func TestParseErrors(t *testing.T) {
	file := "/f 0 100644 1 0 0 0 0.0 - - -\n"
	tests := []struct {
		name   string
		in     string
		opts   ParseOptions
		line   int
		syntax bool
		want   string
	}{
		{"empty input", "", ParseOptions{}, 0, false, "empty dump"},
		{"empty line", "\n", ParseOptions{}, 1, true, "empty PATH"},
		{"blank line later", rootLine + "\n" + file, ParseOptions{}, 2, true, "empty PATH"},
		{"root not first", file, ParseOptions{}, 1, false, `the first line must be the root directory "/"`},
		{"root not a dir", "/ 0 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 1, false, "root must be a directory"},
		{"second root", rootLine + rootLine, ParseOptions{}, 2, false, "second root line"},
		{"duplicate", rootLine + file + file, ParseOptions{}, 3, false, `duplicate entry "f"`},
		{"missing parent", rootLine + "/a/b/c 0 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, "parent directory /a is missing"},
		{"parent not a dir", rootLine + file + "/f/x 0 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 3, false, "parent /f is not a directory"},
		{"dot", rootLine + "/. 0 40755 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, `"." is not a valid name`},
		{"trailing slash", rootLine + "/d 0 40755 1 0 0 0 0.0 - - -\n/d/ 0 40755 1 0 0 0 0.0 - - -\n", ParseOptions{}, 3, false, "empty name"},
		{"name too long", rootLine + "/" + strings.Repeat("n", 256) + " 0 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, "longer than 255"},
		{"NUL byte", rootLine + "/a\x00b 0 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, true, "NUL byte at offset 2"},
		{"bad escape", rootLine + `/a\q 0 100644 1 0 0 0 0.0 - - -` + "\n", ParseOptions{}, 2, true, `PATH: unsupported escape '\q'`},
		{"escaped NUL in path", rootLine + `/a\x00 0 100644 1 0 0 0 0.0 - - -` + "\n", ParseOptions{}, 2, true, "escaped NUL"},
		{"mode not octal", rootLine + "/f 0 100649 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, true, `MODE: invalid integer "100649"`},
		{"mode missing", rootLine + "/f 0\n", ParseOptions{}, 2, true, `MODE: invalid integer ""`},
		{"mode no type", rootLine + "/f 0 170644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, "mode 170644 has no valid file type"},
		{"mode too big", rootLine + "/f 0 100000100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, true, "MODE: 8589967780 does not fit in 32 bits"},
		{"size", rootLine + "/f x 100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, true, `SIZE: invalid integer "x"`},
		{"nlink", rootLine + "/f 0 100644 1.5 0 0 0 0.0 - - -\n", ParseOptions{}, 2, true, `NLINK: invalid integer "1.5"`},
		{"uid", rootLine + "/f 0 100644 1 - 0 0 0.0 - - -\n", ParseOptions{}, 2, true, `UID: invalid integer "-"`},
		{"uid -1", rootLine + "/f 0 100644 1 -1 0 0 0.0 - - -\n", ParseOptions{}, 2, true, "UID: 18446744073709551615 does not fit in 32 bits"},
		{"escaped slash", rootLine + `/\x2f 0 100644 1 0 0 0 0.0 - - -` + "\n", ParseOptions{}, 2, false, "empty name"},
		{"uid too big", rootLine + "/f 0 100644 1 4294967296 0 0 0.0 - - -\n", ParseOptions{}, 2, true, "UID: 4294967296 does not fit in 32 bits"},
		{"gid with uid set", rootLine + "/f 0 100644 1 1000 zz 0 0.0 - - -\n", ParseOptions{}, 2, true, `GID: invalid integer "zz"`},
		{"rdev", rootLine + "/f 0 100644 1 1000 0 1:2 0.0 - - -\n", ParseOptions{}, 2, true, `RDEV: invalid integer "1:2"`},
		{"mtime no dot", rootLine + "/f 0 100644 1 0 0 0 1700000000 - - -\n", ParseOptions{}, 2, true, `MTIME "1700000000" is not SEC.NSEC`},
		{"mtime no nsec", rootLine + "/f 0 100644 1 0 0 0 1. - - -\n", ParseOptions{}, 2, true, `MTIME: invalid integer ""`},
		{"mtime no sec", rootLine + "/f 0 100644 1 0 0 0 .5 - - -\n", ParseOptions{}, 2, true, `MTIME: invalid integer ""`},
		{"mtime two dots", rootLine + "/f 0 100644 1 0 0 0 1.2.3 - - -\n", ParseOptions{}, 2, true, `MTIME: invalid integer "2.3"`},
		{"mtime nsec too big", rootLine + "/f 0 100644 1 0 0 0 1.4294967296 - - -\n", ParseOptions{}, 2, true, "MTIME: 4294967296 does not fit in 32 bits"},
		{"content size", rootLine + "/f 3 100644 1 0 0 0 0.0 - ab -\n", ParseOptions{}, 2, false, "CONTENT has 2 bytes, SIZE says 3"},
		{"empty content field", rootLine + "/f 5 100644 1 0 0 0 0.0 -  -\n", ParseOptions{}, 2, false, "CONTENT has 0 bytes, SIZE says 5"},
		{"content escape", rootLine + `/f 1 100644 1 0 0 0 0.0 - \x4 -` + "\n", ParseOptions{}, 2, true, "CONTENT: no hex characters"},
		{"content too big", rootLine + "/f 5001 100644 1 0 0 0 0.0 - " + strings.Repeat("c", 5001) + " -\n", ParseOptions{}, 2, false, "inline content of 5001 bytes is larger than 5000"},
		{"symlink no target", rootLine + "/l 0 120777 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, "symlink without a target"},
		{"symlink empty target", rootLine + "/l 0 120777 1 0 0 0 0.0  - -\n", ParseOptions{}, 2, false, "symlink without a target"},
		{"symlink too long", rootLine + "/l 0 120777 1 0 0 0 0.0 " + strings.Repeat("t", 4096) + " - -\n", ParseOptions{}, 2, false, "symlink target of 4096 bytes is longer than 4095"},
		{"payload too long", rootLine + "/f 1 100644 1 0 0 0 0.0 " + strings.Repeat("p", 4096) + " - -\n", ParseOptions{}, 2, false, "PAYLOAD of 4096 bytes is longer than 4095"},
		{"digest not hex", rootLine + "/f 1 100644 1 0 0 0 0.0 - - xyz\n", ParseOptions{}, 2, true, "DIGEST: fs-verity sha256 digest \"xyz\""},
		{"digest short", rootLine + "/f 1 100644 1 0 0 0 0.0 - - " + strings.Repeat("a", 63) + "\n", ParseOptions{}, 2, true, "want 64 hex characters, got 63"},
		{"xattr without =", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a\n", ParseOptions{}, 2, true, `xattr "user.a" has no '='`},
		{"xattr double space", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=1  user.b=2\n", ParseOptions{}, 2, true, `xattr "" has no '='`},
		{"xattr escape", rootLine + `/f 0 100644 1 0 0 0 0.0 - - - user.a=\z` + "\n", ParseOptions{}, 2, true, `xattr value: unsupported escape '\z'`},
		{"xattr NUL name", rootLine + `/f 0 100644 1 0 0 0 0.0 - - - user.a\x00b=1` + "\n", ParseOptions{}, 2, true, "escaped NUL"},
		{"xattr empty name", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - =v\n", ParseOptions{}, 2, false, "empty xattr name"},
		{"xattr name too long", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - " + strings.Repeat("k", 256) + "=v\n", ParseOptions{}, 2, false, "xattr name of 256 bytes is longer than 255"},
		{"xattr budget", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("v", 20000) + " user.b=" + strings.Repeat("v", 20000) + "\n", ParseOptions{}, 2, false, "more than the 32767 an inode can hold"},
		{"too many xattrs", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat(`\x01`, 16384) + "\n", ParseOptions{}, 2, false, "too many xattrs: 65543 bytes of xattr text, more than 65535"},
		{"hardlink no target", rootLine + "/h 0 @100644 1 0 0 0 0.0 - - -\n", ParseOptions{}, 2, false, "hardlink without a target path"},
		{"hardlink missing target", rootLine + file + "/h 0 @100644 1 0 0 0 0.0 /nope - -\n", ParseOptions{}, 3, false, "hardlink target /nope does not exist"},
		{"hardlink to dir", rootLine + "/d 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /d - -\n", ParseOptions{}, 3, false, "hardlink to directory /d"},
		{"hardlink to root", rootLine + "/h 0 @100644 1 0 0 0 0.0 / - -\n", ParseOptions{}, 2, false, "hardlink to directory /"},
		{"hardlink empty target", rootLine + "/h 0 @100644 1 0 0 0 0.0  - -\n", ParseOptions{}, 2, false, "hardlink to directory /"},
		{"hardlinked dir", rootLine + "/h 0 @40755 1 0 0 0 0.0 / - -\n", ParseOptions{}, 2, false, "directories cannot be hardlinked"},
		{"hardlink mode invalid", rootLine + file + "/h 0 @0 1 0 0 0 0.0 /f - -\n", ParseOptions{}, 3, false, "mode 0 has no valid file type"},
		{"hardlink self", rootLine + "/h 0 @100644 1 0 0 0 0.0 /h - -\n", ParseOptions{}, 2, false, "hardlink to itself"},
		{"hardlink loop", rootLine + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", ParseOptions{}, 2, false, "hardlink loop"},
		{"hardlink loop not through first", rootLine + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /c - -\n/c 0 @100644 1 0 0 0 0.0 /b - -\n", ParseOptions{}, 2, false, "hardlink loop"},
		{"hardlink to dir via link", rootLine + "/d 0 40755 2 0 0 0 0.0 - - -\n/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /d - -\n", ParseOptions{}, 3, false, "hardlink to directory /d"},
		{"line too long", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("v", 200) + "\n", ParseOptions{MaxLineLen: 100}, 2, true, "line longer than 100 bytes"},
		{"line too long, no newline", rootLine + "/f 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("v", 200), ParseOptions{MaxLineLen: 100}, 2, true, "line longer than 100 bytes"},
		{"huge line", rootLine + strings.Repeat("x", 3<<20) + "\n", ParseOptions{}, 2, true, "line longer than 1048576 bytes"},
		{"strict: no newline", rootLine + "/f 0 100644 1 0 0 0 0.0 - - -", ParseOptions{Strict: true}, 2, true, "missing newline"},
		{"strict: rdev on file", rootLine + "/f 0 100644 1 0 0 5 0.0 - - -\n", ParseOptions{Strict: true}, 2, false, "RDEV 5 on a file that is not a device"},
		{"strict: rdev on dir", "/ 4096 40555 222 0 0 10 0.0 - - -\n", ParseOptions{Strict: true}, 1, false, "RDEV 10 on a file that is not a device"},
		{"strict: symlink size", rootLine + "/l 3 120777 1 0 0 0 0.0 target - -\n", ParseOptions{Strict: true}, 2, false, "symlink SIZE 3 differs from its target length 6"},
		{"strict: symlink content", rootLine + "/l 6 120777 1 0 0 0 0.0 target abcdef -\n", ParseOptions{Strict: true}, 2, false, "symlink with CONTENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseString(tt.in, tt.opts)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if !errors.Is(err, composefs.ErrInvalid) {
				t.Errorf("not ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", clip(err.Error()), tt.want)
			}
			var se *SyntaxError
			var le *LineError
			switch {
			case errors.As(err, &se):
				if !tt.syntax || se.Line != tt.line {
					t.Errorf("*SyntaxError at line %d, want syntax=%v line %d: %v", se.Line, tt.syntax, tt.line, err)
				}
			case errors.As(err, &le):
				if tt.syntax || le.Line != tt.line {
					t.Errorf("*LineError at line %d, want syntax=%v line %d: %v", le.Line, tt.syntax, tt.line, err)
				}
				var ie *composefs.InvalidError
				if !errors.As(err, &ie) {
					t.Errorf("*LineError without a *composefs.InvalidError: %v", err)
				}
			default:
				t.Errorf("error of type %T: %v", err, err)
			}
		})
	}
}

func TestParseErrorText(t *testing.T) {
	_, err := parseString(rootLine+"/noftype 3 0 1 0 0 0 0.0 foo - -\n", ParseOptions{})
	if got, want := err.Error(), "dump: line 2: invalid composefs tree: /noftype: mode 0 has no valid file type"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	_, err = parseString(rootLine+"/f 0 abc 1 0 0 0 0.0 - - -\n", ParseOptions{})
	if got, want := err.Error(), `dump: line 2: syntax error: MODE: invalid integer "abc"`; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestParseStrictAcceptsCanonical(t *testing.T) {
	in := rootLine + "/l 6 120777 1 0 0 0 0.0 target - -\n/c 0 20644 1 0 0 5 0.0 - - -\n"
	if _, err := parseString(in, ParseOptions{Strict: true}); err != nil {
		t.Fatal(err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Parse(io.MultiReader(strings.NewReader(rootLine+"/a 0 1006"), errReader{boom}), ParseOptions{})
	if !errors.Is(err, boom) || errors.Is(err, composefs.ErrInvalid) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want the read error at line 2, not ErrInvalid", err)
	}
}

// TestParseStreams: Parse reads with a bounded buffer, so a large dump
// with ordinary lines parses through a reader that returns one byte at a
// time.
func TestParseStreams(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(rootLine)
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "/f%d%s 0 100644 1 0 0 0 0.0 - - -\n", i, strings.Repeat("x", i%200))
	}
	root, err := Parse(iotest.OneByteReader(&b), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Children) != 2000 {
		t.Errorf("%d children", len(root.Children))
	}
}
