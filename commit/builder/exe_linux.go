package builder

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// executableID identifies the running executable's file (its inode and
// times; /proc/self/exe names the file running even if it was replaced or
// removed since), or is "" if it cannot be known.
var executableID = sync.OnceValue(func() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	return fmt.Sprintf("exe:%d:%d:%d:%d.%09d:%d.%09d", st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
})
