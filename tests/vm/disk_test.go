//go:build vm

package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Reading and changing the disk images without mounting them: debugfs for
// the ext4 root (the host kernel has no fs-verity, and nothing needs to be
// mounted), mtools for the ESP.

// debugfsCat returns the raw content of path on an ext4 image (fs-verity
// does not apply: debugfs reads the blocks).
func debugfsCat(t *testing.T, img, path string) []byte {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", "cat "+path, img)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return out
}

// physicalOffset maps a byte offset of a file on an ext4 image to a byte
// offset of the image (debugfs bmap of its logical block).
func physicalOffset(t *testing.T, img, path string, off int64) int64 {
	t.Helper()
	const block = 4096 // mkfs.ext4 -b 4096
	out, err := exec.Command("debugfs", "-R", fmt.Sprintf("bmap %s %d", path, off/block), img).Output()
	if err != nil {
		t.Fatalf("debugfs bmap %s: %v", path, err)
	}
	phys, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || phys == 0 {
		t.Fatalf("debugfs bmap %s %d: %q", path, off/block, out)
	}
	return phys*block + off%block
}

// flipFileByte inverts the byte at offset off of path on the image, in
// place (the inode, its fs-verity descriptor and Merkle tree untouched):
// what an offline attacker writing the disk does.
func flipFileByte(t *testing.T, img, path string, off int64) {
	t.Helper()
	pos := physicalOffset(t, img, path, off)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, pos); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, pos); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped the byte at offset %d of %s (image offset %d)", off, path, pos)
}

// mtools runs an mtools command on an image (no mounting).
func mtools(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, "", []string{"MTOOLS_SKIP_CHECK=1"}, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// espEntries lists loader/entries/*.conf on the ESP image, sorted.
func espEntries(t *testing.T, esp string) []string {
	t.Helper()
	var names []string
	for _, l := range strings.Split(mtools(t, "mdir", "-b", "-i", esp, "::/loader/entries"), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasSuffix(l, ".conf") {
			names = append(names, l[strings.LastIndexByte(l, '/')+1:])
		}
	}
	sort.Strings(names)
	return names
}
