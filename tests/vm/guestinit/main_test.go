package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestModName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/fat/vfat.ko.xz":           "vfat",
		"kernel/fs/nls/nls_iso8859-1.ko.zst": "nls_iso8859_1",
		"nls-cp437":                          "nls_cp437",
		"loop.ko":                            "loop",
	} {
		if got := modName(in); got != want {
			t.Errorf("modName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadModulesDep(t *testing.T) {
	p := filepath.Join(t.TempDir(), "modules.dep")
	dep := "kernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz\nkernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko.xz\nkernel/fs/fat/fat.ko.xz:\n"
	if err := os.WriteFile(p, []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := readModulesDep(p)
	if err != nil {
		t.Fatal(err)
	}
	if e := m["vfat"]; e.path != "kernel/fs/fat/vfat.ko.xz" || len(e.deps) != 1 || e.deps[0] != "kernel/fs/fat/fat.ko.xz" {
		t.Errorf("vfat: %+v", e)
	}
	if e := m["fat"]; e.path != "kernel/fs/fat/fat.ko.xz" || len(e.deps) != 0 {
		t.Errorf("fat: %+v", e)
	}
	if len(m) != 3 {
		t.Errorf("%d modules, want 3", len(m))
	}
}

func TestEFIString(t *testing.T) {
	// 4 bytes of attributes, then UTF-16LE "\loader\x" and a NUL.
	b := []byte{7, 0, 0, 0}
	for _, r := range `\loader\x` {
		b = append(b, byte(r), 0)
	}
	b = append(b, 0, 0, 'z', 0)
	p := filepath.Join(t.TempDir(), "var")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := efiString(p)
	if err != nil || got != `\loader\x` {
		t.Errorf("efiString = %q, %v", got, err)
	}
}
