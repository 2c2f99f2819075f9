package objstore

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// BenchmarkInsertFile measures publishing new 4 KiB objects (copy,
// fsync, rename, directory fsync) and re-inserting existing ones
// (verification by re-hashing).
func BenchmarkInsertFile(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	data := content(1, 4096)
	b.Run("new", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), "objects"))
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			binary.LittleEndian.PutUint64(data, uint64(i))
			if err := os.WriteFile(src, data, 0o644); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			if w, err := s.InsertFile(ctx, f, int64(len(data)), fsverity.DigestBytes(data)); err != nil || !w {
				b.Fatal(w, err)
			}
			f.Close()
		}
	})
	b.Run("existing", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), "objects"))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(src, data, 0o644); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		d := fsverity.DigestBytes(data)
		if _, err := s.InsertFile(ctx, f, int64(len(data)), d); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if w, err := s.InsertFile(ctx, f, int64(len(data)), d); err != nil || w {
				b.Fatal(w, err)
			}
		}
	})
}
