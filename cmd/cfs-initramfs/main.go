// Command cfs-initramfs verifies and mounts the cfs root early in boot (see
// docs/initramfs.md): `mount-root` in the initramfs, `bless` after a good
// boot.
package main

import (
	"os"

	"github.com/cfs-dev/cfs/internal/cli"
)

func main() {
	os.Exit(cli.RunInitramfs(cli.NewInitramfsCmd()))
}
