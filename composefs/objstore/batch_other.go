//go:build !linux

package objstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// dirHandle keeps nothing open here: the portable code works with paths.
type dirHandle struct{}

func (dirHandle) close() {}

func (b *Batch) statObject(_ *fanout, d fsverity.Digest) (bool, error) {
	return b.s.Has(context.Background(), d)
}

func (b *Batch) stageFile(ctx context.Context, src *os.File, size int64, d fsverity.Digest) (string, error) {
	tmp, err := b.s.createTempIn(d)
	if err != nil {
		return "", err
	}
	name := tmp.Name()
	hashed, sum, err := copyContent(ctx, tmp, src, size)
	if err == nil && hashed && sum != d {
		err = fmt.Errorf("object store: insert %s as %s: %w (it has %s)", src.Name(), d, ErrDigestMismatch, sum)
	}
	if err != nil {
		tmp.Close()
		os.Remove(name)
		return "", err
	}
	if err := b.s.finish(tmp, d, false); err != nil {
		return "", err
	}
	return filepath.Rel(b.s.dir, name)
}

func (b *Batch) publishStaged(ctx context.Context, d fsverity.Digest, st staged) (bool, error) {
	return b.s.publish(ctx, filepath.Join(b.s.dir, st.name), d, false)
}

// readFanout calls fn for every entry of the directory p with whether it
// is a regular file.
func readFanout(p string, fn func(name []byte, regular bool)) error {
	ents, err := os.ReadDir(p)
	for _, e := range ents {
		fn([]byte(e.Name()), e.Type().IsRegular())
	}
	return err
}
