package objstore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// dirStamp stats the fan-out directory of digests starting with first.
func (s *Store) dirStamp(first byte) (DirStamp, error) {
	var st unix.Stat_t
	p := s.fanDir(first)
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

// stampable reports whether dir is on a local filesystem whose directory
// times change, at a granularity of clock ticks, with every entry
// created, removed or renamed.
func stampable(dir string) bool {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return false
	}
	switch uint32(fs.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC,
		unix.TMPFS_MAGIC, unix.F2FS_SUPER_MAGIC:
		return true
	}
	return false
}
