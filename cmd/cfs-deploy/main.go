// Command cfs-deploy deploys signed cfs commits on a sysroot and switches
// between deployments atomically (see docs/deployments.md).
package main

import (
	"os"

	"github.com/cfs-dev/cfs/internal/cli"
)

func main() {
	os.Exit(cli.RunDeploy(cli.NewDeployCmd()))
}
