package erofs

import (
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// wtBigTree builds an OS-like tree in memory: dirs × subdirs × files
// regular files (mostly external with distinct digests, some inline, some
// symlinks), every inode labelled with one of a few SELinux contexts.
func wtBigTree(tb testing.TB, dirs, subdirs, files int) *composefs.Node {
	tb.Helper()
	labels := []string{
		"system_u:object_r:usr_t:s0",
		"system_u:object_r:bin_t:s0",
		"system_u:object_r:lib_t:s0",
	}
	mtime := composefs.Timespec{Sec: 1700000000}
	mkdir := func(name string, i int) *composefs.Node {
		d := composefs.NewNode(name, composefs.TypeDir|0o755)
		d.Mtime = mtime
		d.Xattrs = []composefs.Xattr{{Name: "security.selinux", Value: labels[i%len(labels)]}}
		return d
	}
	root := mkdir("", 0)
	var seed [8]byte
	n := 0
	for i := 0; i < dirs; i++ {
		d := mkdir(fmt.Sprintf("dir%03d", i), i)
		for j := 0; j < subdirs; j++ {
			s := mkdir(fmt.Sprintf("sub%02d", j), j)
			children := make([]*composefs.Node, 0, files)
			for k := 0; k < files; k++ {
				n++
				var c *composefs.Node
				name := fmt.Sprintf("file-%05d.so", k)
				switch {
				case k%20 == 0:
					c = composefs.NewNode(name, composefs.TypeSymlink|0o777)
					c.Payload = "../../lib64/" + name
					c.Size = uint64(len(c.Payload))
				case k%10 == 1:
					c = composefs.NewNode(name, composefs.TypeRegular|0o644)
					c.Content = []byte(fmt.Sprintf("inline content of file %d", n))
					c.Size = uint64(len(c.Content))
				default:
					c = composefs.NewNode(name, composefs.TypeRegular|0o755)
					binary.LittleEndian.PutUint64(seed[:], uint64(n))
					d := fsverity.DigestBytes(seed[:])
					c.Digest = &d
					c.Payload = d.ObjectPath()
					c.Size = 4096 + uint64(n)
				}
				c.Mtime = mtime
				c.Xattrs = []composefs.Xattr{{Name: "security.selinux", Value: labels[k%len(labels)]}}
				children = append(children, c)
			}
			s.Children = children
			if err := s.SortChildren(); err != nil {
				tb.Fatal(err)
			}
			if err := d.AddChild(s); err != nil {
				tb.Fatal(err)
			}
		}
		if err := root.AddChild(d); err != nil {
			tb.Fatal(err)
		}
	}
	return root
}

// BenchmarkWrite writes a 100k-file tree (1100 directories) to io.Discard;
// the image digest is computed as part of every run.
func BenchmarkWrite(b *testing.B) {
	root := wtBigTree(b, 100, 10, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Write(io.Discard, root, DefaultWriteOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteBigTree checks a large synthetic tree with fsck.erofs and the
// reader (inode count, a sample of entries).
func TestWriteBigTree(t *testing.T) {
	if testing.Short() {
		t.Skip("large tree skipped in -short mode")
	}
	root := wtBigTree(t, 20, 5, 100)
	img := wtWrite(t, root, DefaultWriteOptions())
	inos := binary.LittleEndian.Uint64(img[SuperblockOffset+16:])
	// root + 20 dirs + 100 subdirs + 10000 files + 256 stubs.
	if want := uint64(1 + 20 + 100 + 10000 + 256); inos != want {
		t.Errorf("inos %d, want %d", inos, want)
	}
	wtFsck(t, img)
}
