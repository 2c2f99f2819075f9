// Command gentree generates a deterministic synthetic OS-like tree for the
// benchmarks: many directories, mostly small files, a tail of large ones,
// some duplicate content and symlinks.
//
//	gentree -files 60000 -bytes 1073741824 -seed 1 DIR
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

func main() {
	files := flag.Int("files", 60000, "number of regular files")
	total := flag.Int64("bytes", 1<<30, "approximate total bytes of file content")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gentree [-files N] [-bytes N] [-seed N] DIR")
		os.Exit(2)
	}
	if err := generate(flag.Arg(0), *files, *total, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(1)
	}
}

func generate(root string, files int, total int64, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// Size classes: 20% tiny (inline, ≤64 B), 60% small (65 B–16 KiB),
	// 18% medium (16–64 KiB), 2% large (the rest of the budget).
	sizes := make([]int64, files)
	var used int64
	var large []int
	for i := range sizes {
		switch r := rng.IntN(100); {
		case r < 20:
			sizes[i] = int64(rng.IntN(65))
		case r < 80:
			sizes[i] = 65 + int64(rng.IntN(16*1024))
		case r < 98:
			sizes[i] = 16*1024 + int64(rng.IntN(48*1024))
		default:
			large = append(large, i)
			continue
		}
		used += sizes[i]
	}
	if rest := total - used; rest > 0 && len(large) > 0 {
		per := rest / int64(len(large))
		for _, i := range large {
			sizes[i] = per/2 + rng.Int64N(per+1)
		}
	}
	buf := make([]byte, 1<<20)
	dirs := 0
	var dir string
	for i, size := range sizes {
		if i%200 == 0 {
			dir = filepath.Join(root, fmt.Sprintf("usr/lib/pkg%03d/sub%02d", dirs/10, dirs%10))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			dirs++
		}
		name := filepath.Join(dir, fmt.Sprintf("file%05d.bin", i))
		// 5% of the files repeat an earlier file's content (same seed).
		contentSeed := uint64(i)
		if i > 100 && rng.IntN(20) == 0 {
			contentSeed = uint64(rng.IntN(i))
			size = sizes[contentSeed]
		}
		if err := writeFile(name, size, seed<<32|contentSeed, buf); err != nil {
			return err
		}
		if i%500 == 0 {
			if err := os.Symlink(filepath.Base(name), name+".link"); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(name string, size int64, seed uint64, buf []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40)})
	for size > 0 {
		n := int64(len(buf))
		if n > size {
			n = size
		}
		src.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	return f.Close()
}
