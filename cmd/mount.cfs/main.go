// Command mount.cfs is the mount(8) helper for cfs composefs images:
// mount -t cfs IMAGE DIR -o basedir=OBJECTS[,digest=HEX][,verify=MODE].
package main

import (
	"os"

	"github.com/cfs-dev/cfs/internal/cli"
)

func main() {
	os.Exit(cli.MountHelper(os.Args[1:]))
}
