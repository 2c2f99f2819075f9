package objstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// dirStamp stats the fan-out directory of digests starting with first.
func (s *Store) dirStamp(first byte) (DirStamp, error) {
	var st unix.Stat_t
	p := filepath.Join(s.dir, fmt.Sprintf("%02x", first))
	err := unix.Fstatat(unix.AT_FDCWD, p, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return DirStamp{}, nil
	case err != nil:
		return DirStamp{}, fmt.Errorf("object store: stat %s: %w", p, err)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return DirStamp{}, nil
	}
	return DirStamp{
		Dev:   st.Dev,
		Ino:   st.Ino,
		Size:  st.Size,
		Mtime: st.Mtim.Nano(),
		Ctime: st.Ctim.Nano(),
	}, nil
}

// timestampMargin is how long after a change to a directory of dir's
// filesystem its times are sure to differ from those of a later change.
func timestampMargin(dir string) time.Duration {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return coarseMargin
	}
	switch uint32(fs.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC,
		unix.TMPFS_MAGIC, unix.F2FS_SUPER_MAGIC:
		return fineMargin
	}
	return coarseMargin
}
