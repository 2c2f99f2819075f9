// Command copyfloor measures the least work a content store that keeps
// its own copy of every file must do on a filesystem: copy the bytes of
// the regular files of SRC into new files under DST with
// copy_file_range (a reflink with -reflink where the filesystem has
// them), on -j workers, then one syncfs. No hashing, no names, no
// metadata beyond creating the files. bench/commit.sh compares it with
// ostree commit and cfs-commit build: no tool that copies the data can
// be faster than this. -direct writes the copies with O_DIRECT instead
// (read into an aligned buffer, written in whole blocks, truncated to
// size), bypassing the page cache.
//
//	copyfloor [-j N] [-reflink | -direct] SRC DST
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	workers := flag.Int("j", 2*runtime.NumCPU(), "parallel copies")
	reflink := flag.Bool("reflink", false, "clone with FICLONE instead of copying")
	flag.BoolVar(&direct, "direct", false, "write with O_DIRECT instead of copy_file_range")
	flag.Parse()
	if flag.NArg() != 2 || *reflink && direct {
		fmt.Fprintln(os.Stderr, "usage: copyfloor [-j N] [-reflink | -direct] SRC DST")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *workers, *reflink); err != nil {
		fmt.Fprintln(os.Stderr, "copyfloor:", err)
		os.Exit(1)
	}
}

func run(src, dst string, workers int, reflink bool) error {
	var files []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	// 256 fan-out directories, as the stores have.
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dst, fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return err
		}
	}
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := copyOne(files[i], filepath.Join(dst, fmt.Sprintf("%02x/%d", i%256, i)), reflink); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range files {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	d, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	if err := unix.Syncfs(d); err != nil {
		return err
	}
	fmt.Printf("%d files copied in %.2f s (with syncfs)\n", len(files), time.Since(start).Seconds())
	return nil
}

// direct selects copyDirect.
var direct bool

// directBufs are 1 MiB buffers aligned for O_DIRECT (anonymous mappings).
var directBufs = sync.Pool{New: func() any {
	b, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		panic(err)
	}
	return &b
}}

// copyDirect copies size bytes of in to a new file dst written with
// O_DIRECT: whole 4 KiB blocks, the last one zero-padded, then truncated.
func copyDirect(in *os.File, dst string, size int64) error {
	fd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	defer unix.Close(fd)
	bp := directBufs.Get().(*[]byte)
	defer directBufs.Put(bp)
	buf := *bp
	for off := int64(0); off < size; {
		n, err := in.ReadAt(buf, off)
		if n == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("short read")
			}
			return fmt.Errorf("read %s: %w", in.Name(), err)
		}
		w := (n + 4095) &^ 4095
		clear(buf[n:w])
		if _, err := unix.Pwrite(fd, buf[:w], off); err != nil {
			return fmt.Errorf("write %s: %w", dst, err)
		}
		off += int64(n)
	}
	return unix.Ftruncate(fd, size)
}

func copyOne(src, dst string, reflink bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if direct {
		return copyDirect(in, dst, st.Size())
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if reflink {
		return unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	}
	for off, size := int64(0), st.Size(); off < size; {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, int(size-off), 0)
		if err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		if n == 0 {
			return fmt.Errorf("copy %s: %w", src, errors.New("short copy"))
		}
		off += int64(n)
	}
	return out.Close()
}
