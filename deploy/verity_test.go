package deploy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy"
)

// EnableVerity either enables and checks fs-verity everywhere (a file
// system with fs-verity: the VM tests run it for real on ext4 -O verity) or
// refuses with ErrNotSupported, changing nothing.
func TestEnableVerity(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	before := f.status(s)
	res, err := s.EnableVerity(context.Background())
	if perr := fsverity.Supported(f.root); perr != nil {
		if !errors.Is(err, fsverity.ErrNotSupported) {
			t.Fatalf("without fs-verity: %v, want ErrNotSupported", err)
		}
		if after := f.status(s); len(after.Deployments) != len(before.Deployments) {
			t.Fatalf("status changed: %+v", after)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Objects == 0 || res.Images != 1 {
		t.Fatalf("result %+v", res)
	}
	again, err := s.EnableVerity(context.Background())
	if err != nil || again.ObjectsEnabled != 0 || again.ImagesEnabled != 0 || again.Objects != res.Objects {
		t.Fatalf("second run %+v %v", again, err)
	}
}
