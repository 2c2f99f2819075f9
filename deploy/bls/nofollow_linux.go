package bls

import "syscall"

// noFollow refuses to open an entry through a symlink.
const noFollow = syscall.O_NOFOLLOW
