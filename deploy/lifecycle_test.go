package deploy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy"
	"github.com/cfs-dev/cfs/deploy/bls"
)

// TestLifecycle: init, switch to A, switch to B, rollback, status, pin,
// cleanup, each checked on disk.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := f.open()

	// Init made the layout.
	for _, p := range []string{"cfs/repo/config", "cfs/trusted.d/release.pub", "cfs/revoked.d", "cfs/deploy/os/deploy", "cfs/deploy/os/var", "boot/loader"} {
		if _, err := os.Stat(filepath.Join(f.root, p)); err != nil {
			t.Fatalf("init: %v", err)
		}
	}
	if st := f.status(s); len(st.Deployments) != 0 {
		t.Fatalf("fresh sysroot has deployments: %+v", st)
	}

	// --- switch to A ---
	idA, resA := f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{Kargs: []string{"root=UUID=1234", "quiet"}})
	if resA.Entry != "cfs-0+3.conf" || resA.Staged || !resA.Changed || resA.Version != "1.0" {
		t.Fatalf("switch A result: %+v", resA)
	}
	if resA.ObjectsVerified != resA.Objects || resA.Objects == 0 {
		t.Errorf("first switch verified %d of %d objects, want all", resA.ObjectsVerified, resA.Objects)
	}
	if got := entryNames(t, f.root); !reflect.DeepEqual(got, []string{"cfs-0+3.conf"}) {
		t.Fatalf("entries after A: %v", got)
	}
	bs := checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idA.String()}) {
		t.Fatalf("boot order after A: %v", bs.commits)
	}
	depA := f.deployDir(resA.Deployment)
	if resA.Deployment != "/cfs/deploy/os/deploy/"+idA.String()+".0" {
		t.Errorf("deployment path %s", resA.Deployment)
	}
	// The entry carries the configured and the cfs arguments.
	e := readEntry(t, f.root, "cfs-0+3.conf")
	mA := readCommit(t, s.Repo(), idA)
	wantOpts := "root=UUID=1234 quiet composefs=" + mA.Image.Digest.String() + " cfs.deployment=" + resA.Deployment
	if e.Cmdline() != wantOpts {
		t.Errorf("options %q, want %q", e.Cmdline(), wantOpts)
	}
	if e.Version != "0" || e.Title != "os 1.0 ("+idA.Short()+")" || !strings.HasPrefix(e.Linux, "/boot/cfs/os/6.1.0-cfs-") {
		t.Errorf("entry: %+v", e)
	}
	// Boot files are byte-identical to the tree's.
	if got := fileContent(t, s.BootPath(e.Linux)); got != string(randomBytes(1, 8192)) {
		t.Error("vmlinuz on the boot partition differs from the tree's")
	}
	// /etc is the defaults; origin follows the ref; the commit is copied.
	if got := fileContent(t, filepath.Join(depA, "etc/app/app.conf")); got != "setting=1.0\n" {
		t.Errorf("etc/app/app.conf = %q", got)
	}
	if got := fileContent(t, filepath.Join(depA, "origin")); !strings.Contains(got, "ref="+testRef+"\n") {
		t.Errorf("origin = %q", got)
	}
	if got, _, err := fsverity.DigestFile(ctx, filepath.Join(depA, "image.cfs")); err != nil || got != mA.Image.Digest {
		t.Errorf("image.cfs digest %s, want %s (%v)", got, mA.Image.Digest, err)
	}

	// Local changes in A's /etc, and a machine id (as at first boot).
	if err := os.WriteFile(filepath.Join(depA, "etc/local.conf"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const machineID = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(depA, "etc/machine-id"), []byte(machineID+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}

	// --- switch to B: kargs carried over, quiet deleted ---
	idB, resB := f.buildPullSwitch(s, defaultSpec("2.0"), deploy.SwitchOptions{KargsDelete: []string{"quiet"}, Kargs: []string{"console=ttyS0"}})
	if resB.Entry != "cfs-1+3.conf" {
		t.Fatalf("switch B entry %s", resB.Entry)
	}
	if resB.ObjectsVerified >= resB.Objects {
		t.Errorf("switch B verified %d of %d objects: objects A already uses should be skipped", resB.ObjectsVerified, resB.Objects)
	}
	objsA, objsB := objectsOf(t, s.Repo(), idA), objectsOf(t, s.Repo(), idB)
	newInB := 0
	for d := range objsB {
		if _, ok := objsA[d]; !ok {
			newInB++
		}
	}
	if resB.ObjectsVerified != newInB {
		t.Errorf("switch B verified %d objects, %d are new", resB.ObjectsVerified, newInB)
	}
	if !resB.BootFilesReused {
		t.Error("B has A's kernel and initramfs: the boot files should be reused")
	}
	bs = checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idB.String(), idA.String()}) {
		t.Fatalf("boot order after B: %v, want B then A", bs.commits)
	}
	eB := readEntry(t, f.root, "cfs-1+3.conf")
	mB := readCommit(t, s.Repo(), idB)
	if want := "root=UUID=1234 console=ttyS0 composefs=" + mB.Image.Digest.String() + " cfs.deployment=" + resB.Deployment; eB.Cmdline() != want {
		t.Errorf("B options %q, want %q", eB.Cmdline(), want)
	}
	if eB.MachineID != machineID || readEntry(t, f.root, "cfs-0+3.conf").MachineID != machineID {
		t.Errorf("machine-id not on every cfs entry: %q", eB.MachineID)
	}
	depB := f.deployDir(resB.Deployment)
	if got := fileContent(t, filepath.Join(depB, "etc/local.conf")); got != "mine\n" {
		t.Errorf("local /etc change lost: %q", got)
	}
	if got := fileContent(t, filepath.Join(depB, "etc/app/app.conf")); got != "setting=2.0\n" {
		t.Errorf("upstream /etc change lost: %q", got)
	}
	if !slices.Contains(resB.Etc.Added, "local.conf") {
		t.Errorf("etc report: %+v", resB.Etc)
	}

	st := f.status(s)
	if len(st.Deployments) != 2 {
		t.Fatalf("status: %+v", st)
	}
	d0, d1 := st.Deployments[0], st.Deployments[1]
	if d0.Commit != idB.String() || !d0.Default || d0.Rollback || d0.Index != 0 || d0.Version != "2.0" || d0.ImageDigest != mB.Image.Digest.String() {
		t.Errorf("status[0]: %+v", d0)
	}
	if d1.Commit != idA.String() || d1.Default || !d1.Rollback || d1.Index != 1 {
		t.Errorf("status[1]: %+v", d1)
	}
	if !d0.Signature.Valid || len(d0.Signature.KeyIDs) != 1 || d0.Signature.KeyIDs[0] != f.signer.KeyID().String() {
		t.Errorf("signature status: %+v", d0.Signature)
	}
	if d0.BootCounter == nil || d0.BootCounter.State != "indeterminate" || *d0.BootCounter.TriesLeft != 3 || *d0.BootCounter.TriesDone != 0 {
		t.Errorf("boot counter: %+v", d0.BootCounter)
	}
	if d0.Booted || d0.Pending || d0.Staged || d0.Pinned || d0.Origin != testRef {
		t.Errorf("status flags: %+v", d0)
	}

	// --- rollback: A becomes the default under a new serial ---
	rb, err := s.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Default != resA.Deployment || rb.Previous != resB.Deployment || rb.Entry != "cfs-2+3.conf" {
		t.Errorf("rollback: %+v", rb)
	}
	if got := entryNames(t, f.root); !reflect.DeepEqual(got, []string{"cfs-1+3.conf", "cfs-2+3.conf"}) {
		t.Fatalf("entries after rollback: %v", got)
	}
	bs = checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idA.String(), idB.String()}) {
		t.Fatalf("boot order after rollback: %v, want A then B", bs.commits)
	}
	st = f.status(s)
	if !st.Deployments[0].Default || st.Deployments[0].Commit != idA.String() || !st.Deployments[1].Rollback {
		t.Errorf("status after rollback: %+v", st)
	}

	// --- pin B (index 1), switch to C: A (previous default) and B (pinned) stay ---
	if err := s.Pin(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(depB, deploy.PinnedFile)); err != nil {
		t.Fatalf("pin: %v", err)
	}
	if st := f.status(s); !st.Deployments[1].Pinned || st.Deployments[0].Pinned {
		t.Errorf("pinned flags: %+v", st)
	}
	specC := defaultSpec("3.0")
	specC.kernel = 3 // a new kernel: new boot files
	idC, resC := f.buildPullSwitch(s, specC, deploy.SwitchOptions{})
	if resC.BootFilesReused {
		t.Error("C has a new kernel but its boot files were reused")
	}
	bs = checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idC.String(), idA.String(), idB.String()}) {
		t.Fatalf("boot order after C: %v, want C, A, B", bs.commits)
	}
	if err := s.Pin(ctx, 5, true); err == nil {
		t.Error("pin of a missing index succeeded")
	}

	// --- switch to D without pins: B stays only while pinned ---
	if err := s.Pin(ctx, 2, false); err != nil {
		t.Fatal(err)
	}
	specD := defaultSpec("4.0")
	idD, _ := f.buildPullSwitch(s, specD, deploy.SwitchOptions{})
	bs = checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idD.String(), idC.String()}) {
		t.Fatalf("boot order after D: %v, want D, C", bs.commits)
	}

	// --- cleanup: A and B go (directories, B's unique objects, A's boot files stay: D uses them) ---
	dry, err := s.Cleanup(ctx, deploy.CleanupOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.root)
	if len(dry.Deployments) != 2 || dry.Objects == 0 {
		t.Errorf("dry run: %+v", dry)
	}
	requireUnchanged(t, before, f.root)
	cl, err := s.Cleanup(ctx, deploy.CleanupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(cl.Deployments)
	wantRemoved := []string{resA.Deployment, resB.Deployment}
	slices.Sort(wantRemoved)
	if !reflect.DeepEqual(cl.Deployments, wantRemoved) || cl.Objects != dry.Objects {
		t.Errorf("cleanup removed %+v, dry run said %+v", cl, dry)
	}
	for _, p := range []string{resA.Deployment, resB.Deployment} {
		if _, err := os.Stat(f.deployDir(p)); !os.IsNotExist(err) {
			t.Errorf("deployment %s still there: %v", p, err)
		}
	}
	objsC, objsD := objectsOf(t, s.Repo(), idC), objectsOf(t, s.Repo(), idD)
	for d := range objsB {
		_, inC := objsC[d]
		_, inD := objsD[d]
		if got := hasObject(s.Repo(), d); got != (inC || inD) {
			t.Errorf("object %s of B: present=%v, used by C or D=%v", d, got, inC || inD)
		}
	}
	for _, objs := range []map[fsverity.Digest]int64{objsC, objsD} {
		for d := range objs {
			if !hasObject(s.Repo(), d) {
				t.Errorf("object %s of a kept deployment was pruned", d)
			}
		}
	}
	if s.Repo().HasCommit(idB) || s.Repo().HasCommit(idA) || !s.Repo().HasCommit(idC) || !s.Repo().HasCommit(idD) {
		t.Error("cleanup kept or removed the wrong commits")
	}
	if hasObject(s.Repo(), mB.Dump.Digest) || !hasObject(s.Repo(), readCommit(t, s.Repo(), idD).Dump.Digest) {
		t.Error("dump objects: B's should go, D's stay")
	}
	// Boot files: D reuses A's kernel directory, C has its own; nothing else.
	bootDirs, _ := os.ReadDir(filepath.Join(f.root, "boot/cfs/os"))
	if len(bootDirs) != 2 {
		t.Errorf("boot file directories after cleanup: %d, want 2", len(bootDirs))
	}
	bs = checkBootable(t, s, f.root)
	if !reflect.DeepEqual(bs.commits, []string{idD.String(), idC.String()}) {
		t.Fatalf("boot order after cleanup: %v", bs.commits)
	}
	// A second cleanup has nothing to do.
	again, err := s.Cleanup(ctx, deploy.CleanupOptions{})
	if err != nil || len(again.Deployments) != 0 || again.Objects != 0 || len(again.BootFiles) != 0 {
		t.Errorf("second cleanup: %+v, %v", again, err)
	}
}

func readEntry(t testing.TB, root, name string) *bls.Entry {
	t.Helper()
	fh, err := os.Open(filepath.Join(root, "boot/loader/entries", name))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	e, err := bls.Parse(fh)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestStatusJSONSchema pins the keys of status --json.
func TestStatusJSONSchema(t *testing.T) {
	f := newFixture(t)
	s := f.open()
	f.buildPullSwitch(s, defaultSpec("1.0"), deploy.SwitchOptions{})
	b, err := json.Marshal(f.status(s))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	deps := doc["deployments"]
	if len(deps) != 1 {
		t.Fatalf("deployments: %s", b)
	}
	var keys []string
	for k := range deps[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"boot-counter", "booted", "commit", "default", "deployment", "entry", "image-digest", "index",
		"kernel-version", "options", "origin", "pending", "pinned", "rollback", "serial", "signature", "staged",
		"stateroot", "timestamp", "version"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("status keys\n got %v\nwant %v", keys, want)
	}
	sig := deps[0]["signature"].(map[string]any)
	if sig["valid"] != true || len(sig["key-ids"].([]any)) != 1 {
		t.Errorf("signature: %v", sig)
	}
	bc := deps[0]["boot-counter"].(map[string]any)
	if bc["state"] != "indeterminate" || bc["tries-left"] != float64(3) || bc["tries-done"] != float64(0) {
		t.Errorf("boot-counter: %v", bc)
	}
}
