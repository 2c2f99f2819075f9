package bls

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestWriteEntryLoadDir(t *testing.T) {
	ctx := context.Background()
	boot := t.TempDir()
	e1 := &Entry{Title: "cfs 1", Version: "1", SortKey: "cfs", Linux: "/cfs/1/vmlinuz",
		Initrd: []string{"/cfs/1/initramfs.img"}, Options: []string{"root=LABEL=root composefs=abc"}}
	e2 := &Entry{Title: "cfs 2", Version: "2", SortKey: "cfs", Linux: "/cfs/2/vmlinuz",
		Extra: []Field{{"grub_users", "$grub_users"}}}
	if err := WriteEntry(ctx, boot, "cfs-1.conf", e1); err != nil {
		t.Fatal(err)
	}
	if err := WriteEntry(ctx, boot, "cfs-2+3.conf", e2); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(boot, EntriesDir)
	// Things boot loaders ignore, and so must LoadDir.
	mustWrite(t, filepath.Join(dir, ".cfs-9.conf"), "linux /hidden\n")
	mustWrite(t, filepath.Join(dir, "README"), "not an entry\n")
	mustWrite(t, filepath.Join(dir, "cfs-8.conf.tmp-123"), "linux /tmp\n")
	if err := os.Mkdir(filepath.Join(dir, "sub.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("cfs-1.conf", filepath.Join(dir, "link.conf")); err != nil {
		t.Fatal(err)
	}
	got, err := LoadDir(ctx, boot)
	if err != nil {
		t.Fatal(err)
	}
	want := []LoadedEntry{{"cfs-2+3.conf", e2}, {"cfs-1.conf", e1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadDir = %+v\nwant %+v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cfs-1.conf"))
	if err != nil || string(b) != string(e1.Marshal()) {
		t.Fatalf("file content %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "cfs-1.conf")); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}

	// Replacing an entry is atomic and leaves no temporary files.
	e1.Title = "cfs 1 (rewritten)"
	if err := WriteEntry(ctx, boot, "cfs-1.conf", e1); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(dir)
	var left []string
	for _, de := range des {
		left = append(left, de.Name())
	}
	wantLeft := []string{".cfs-9.conf", "README", "cfs-1.conf", "cfs-2+3.conf", "cfs-8.conf.tmp-123", "link.conf", "sub.conf"}
	if !reflect.DeepEqual(left, wantLeft) {
		t.Fatalf("directory holds %q, want %q", left, wantLeft)
	}
}

func TestLoadDirReportsBadFiles(t *testing.T) {
	boot := t.TempDir()
	dir := filepath.Join(boot, EntriesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "good.conf"), "title ok\nlinux /vmlinuz\n")
	mustWrite(t, filepath.Join(dir, "broken.conf"), "title no payload\n")
	mustWrite(t, filepath.Join(dir, "badid.conf"), "linux /a\nmachine-id NOTHEX\n")
	got, err := LoadDir(context.Background(), boot)
	if len(got) != 1 || got[0].FileName != "good.conf" {
		t.Fatalf("LoadDir returned %+v, want the one good entry", got)
	}
	var le *LoadError
	if !errors.As(err, &le) || len(le.Files) != 2 {
		t.Fatalf("err = %v, want a *LoadError for two files", err)
	}
	if le.Files[0].FileName != "badid.conf" || le.Files[1].FileName != "broken.conf" {
		t.Fatalf("failed files %v", le.Files)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("LoadError does not unwrap to ErrInvalid: %v", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Fatalf("errors.As(*Error) = %v (line %d), want line 2 of badid.conf", pe, pe.Line)
	}
}

func TestLoadDirMissing(t *testing.T) {
	_, err := LoadDir(context.Background(), t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadDirCanceled(t *testing.T) {
	boot := t.TempDir()
	if err := WriteEntry(context.Background(), boot, "a.conf", &Entry{Linux: "/a"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LoadDir(ctx, boot); !errors.Is(err, context.Canceled) {
		t.Fatalf("LoadDir with canceled context: %v", err)
	}
	if err := WriteEntry(ctx, boot, "b.conf", &Entry{Linux: "/b"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteEntry with canceled context: %v", err)
	}
}

func TestWriteEntryRefuses(t *testing.T) {
	ctx := context.Background()
	boot := t.TempDir()
	good := &Entry{Linux: "/vmlinuz"}
	for _, tc := range []struct {
		name string
		file string
		e    *Entry
	}{
		{"bad name", "../evil.conf", good},
		{"no suffix", "cfs-1", good},
		{"hidden", ".x.conf", good},
		{"invalid entry", "ok.conf", &Entry{Title: "no payload"}},
		{"unnormalized path", "ok.conf", &Entry{Linux: "/a/../b"}},
		{"newline injection", "ok.conf", &Entry{Linux: "/a", Title: "x\nefi /evil.efi"}},
	} {
		if err := WriteEntry(ctx, boot, tc.file, tc.e); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: WriteEntry = %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(boot, "loader")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("refused writes created files: %v", err)
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteEntryNeedsBoot(t *testing.T) {
	boot := filepath.Join(t.TempDir(), "boot")
	err := WriteEntry(context.Background(), boot, "a.conf", &Entry{Linux: "/a"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("WriteEntry into a missing $BOOT = %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(boot); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("WriteEntry created $BOOT")
	}
}
