package builder

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// FileCache is a composefs.DigestCache kept in a file between builds: the
// fs-verity digest of every regular file seen by the last build, keyed by
// (device, inode, size, mtime, ctime). Save writes only the entries used or
// added by the current build, so the file tracks the tree and never grows
// without bound. A damaged cache file is ignored (everything is re-hashed);
// a cache can make a build faster, never different.
type FileCache struct {
	path string
	mu   sync.Mutex
	old  map[composefs.FileKey]fsverity.Digest
	used map[composefs.FileKey]fsverity.Digest
	hits int64
}

var cacheMagic = []byte("cfs-digest-cache-1\n")

const cacheEntrySize = 8*7 + 32

// OpenFileCache loads the cache at path (a missing or unreadable file gives
// an empty cache).
func OpenFileCache(path string) *FileCache {
	c := &FileCache{path: path, old: map[composefs.FileKey]fsverity.Digest{}, used: map[composefs.FileKey]fsverity.Digest{}}
	f, err := os.Open(path)
	if err != nil {
		return c
	}
	defer f.Close()
	if m, err := readCache(bufio.NewReaderSize(f, 1<<16)); err == nil {
		c.old = m
	}
	return c
}

func readCache(r io.Reader) (map[composefs.FileKey]fsverity.Digest, error) {
	head := make([]byte, len(cacheMagic)+8)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:len(cacheMagic)], cacheMagic) {
		return nil, errors.New("not a digest cache")
	}
	n := binary.LittleEndian.Uint64(head[len(cacheMagic):])
	if n > 1<<28 {
		return nil, errors.New("digest cache too large")
	}
	m := make(map[composefs.FileKey]fsverity.Digest, n)
	var e [cacheEntrySize]byte
	for i := uint64(0); i < n; i++ {
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return nil, err
		}
		u := func(j int) uint64 { return binary.LittleEndian.Uint64(e[8*j:]) }
		k := composefs.FileKey{Dev: u(0), Ino: u(1), Size: int64(u(2)), MtimeSec: int64(u(3)), MtimeNsec: int64(u(4)), CtimeSec: int64(u(5)), CtimeNsec: int64(u(6))}
		var d fsverity.Digest
		copy(d[:], e[56:])
		m[k] = d
	}
	return m, nil
}

// Lookup implements composefs.DigestCache.
func (c *FileCache) Lookup(k composefs.FileKey) (fsverity.Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.old[k]
	if ok {
		c.used[k] = d
		c.hits++
	}
	return d, ok
}

// Add implements composefs.DigestCache.
func (c *FileCache) Add(k composefs.FileKey, d fsverity.Digest) {
	c.mu.Lock()
	c.used[k] = d
	c.mu.Unlock()
}

// Hits returns how many lookups were answered.
func (c *FileCache) Hits() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

// Save writes the entries of this build atomically.
func (c *FileCache) Save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]composefs.FileKey, 0, len(c.used))
	for k := range c.used {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Dev != b.Dev {
			return a.Dev < b.Dev
		}
		return a.Ino < b.Ino
	})
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	f, err := atomicfile.New(c.path, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	w := bufio.NewWriterSize(f, 1<<16)
	w.Write(cacheMagic)
	binary.Write(w, binary.LittleEndian, uint64(len(keys)))
	var e [cacheEntrySize]byte
	for _, k := range keys {
		for j, v := range []uint64{k.Dev, k.Ino, uint64(k.Size), uint64(k.MtimeSec), uint64(k.MtimeNsec), uint64(k.CtimeSec), uint64(k.CtimeNsec)} {
			binary.LittleEndian.PutUint64(e[8*j:], v)
		}
		d := c.used[k]
		copy(e[56:], d[:])
		w.Write(e[:])
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write digest cache: %w", err)
	}
	return f.Commit()
}
