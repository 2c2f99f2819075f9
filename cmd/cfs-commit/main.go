// Command cfs-commit builds and inspects composefs images and cfs commits.
package main

import (
	"os"

	"github.com/cfs-dev/cfs/internal/cli"
)

func main() {
	os.Exit(cli.Run(cli.NewCommitCmd()))
}
