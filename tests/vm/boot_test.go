//go:build vm

package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/tpm"
)

// bootedRecord is the part of /run/cfs/booted.json (written by
// cfs-initramfs mount-root, printed by the guest init) the tests check.
type bootedRecord struct {
	Deployment  string   `json:"deployment"`
	Commit      string   `json:"commit"`
	ImageDigest string   `json:"image-digest"`
	KeyIDs      []string `json:"key-ids"`
	Verity      string   `json:"verity"`
	TPM         struct {
		Mode       string `json:"mode"`
		Present    bool   `json:"present"`
		Enrolled   bool   `json:"enrolled"`
		Unsealed   bool   `json:"unsealed"`
		MeasurePCR int    `json:"measure-pcr"`
		Measured   bool   `json:"measured"`
		Event      string `json:"event"`
		Note       string `json:"note"`
	} `json:"tpm"`
}

// guestReport is what the guest init printed in a boot that reached it.
type guestReport struct {
	booted  map[string]string // commit, digest, deployment
	record  bootedRecord
	root    map[string]string // the mount of /: fstype, source, superopts
	tpm     map[string]string // dev, pcr7, pcr15
	reads   map[string]map[string]string
	mode    string
	lines   []string
	summary string
}

// requireGuest checks that the boot switched root into the deployed OS,
// that its init ran and powered the machine off, and parses its report.
func requireGuest(t *testing.T, res *bootResult) *guestReport {
	t.Helper()
	g := &guestReport{reads: map[string]map[string]string{}, lines: res.guestLines()}
	for _, l := range g.lines {
		switch {
		case strings.HasPrefix(l, "booted "):
			g.booted = fields(l[len("booted "):])
		case strings.HasPrefix(l, "booted-json "):
			if err := json.Unmarshal([]byte(l[len("booted-json "):]), &g.record); err != nil {
				t.Errorf("guest booted-json: %v: %s", err, l)
			}
		case strings.HasPrefix(l, "mount point=/ "):
			g.root = fields(l[len("mount "):])
		case strings.HasPrefix(l, "tpm "):
			g.tpm = fields(l[len("tpm "):])
		case strings.HasPrefix(l, "read "):
			f := fields(l[len("read "):])
			g.reads[f["path"]] = f
		case strings.HasPrefix(l, "mode "):
			g.mode = strings.TrimPrefix(l, "mode ")
		}
	}
	if res.timedOut || !res.exited {
		t.Fatalf("the guest did not power off (timed out %v, stopped at %v); serial log %s:\n%s",
			res.timedOut, res.stopped, res.logPath, lastLines(res.log, 40))
	}
	if g.booted == nil || g.root == nil || g.tpm == nil {
		t.Fatalf("the guest init did not report the boot; serial log %s:\n%s", res.logPath, lastLines(res.log, 40))
	}
	return g
}

// checkBootedAs checks that the guest booted deployment d verified by the
// kernel: the composefs root is an overlay with verity=require over the
// object store, and the booted record names d's commit and digest (those
// of cfs-deploy status --json on the host).
func checkBootedAs(t *testing.T, g *guestReport, d *deployment) {
	t.Helper()
	if g.booted["commit"] != d.Commit || g.booted["digest"] != d.ImageDigest || g.booted["deployment"] != d.Deployment {
		t.Errorf("guest booted %v, cfs-deploy status says commit=%s digest=%s deployment=%s",
			g.booted, d.Commit, d.ImageDigest, d.Deployment)
	}
	if g.record.Verity != "kernel" {
		t.Errorf("booted record: verity %q, want kernel", g.record.Verity)
	}
	if g.root["fstype"] != "overlay" || !hasOption(g.root["superopts"], "verity=require") ||
		!strings.Contains(g.root["superopts"], "cfs/repo/objects") {
		t.Errorf("root mount %v: want an overlay with verity=require over the object store", g.root)
	}
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// checkRead checks one file the guest read: its content (SHA-256) or the
// errno.
func checkRead(t *testing.T, g *guestReport, path string, wantContent []byte, wantErrno string) {
	t.Helper()
	r := g.reads[path]
	switch {
	case r == nil:
		t.Errorf("the guest did not read %s", path)
	case wantErrno != "":
		if r["result"] != "error" || r["errno"] != wantErrno {
			t.Errorf("reading %s in the guest: %v, want errno %s", path, r, wantErrno)
		}
	default:
		sum := sha256.Sum256(wantContent)
		if r["result"] != "ok" || r["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("reading %s in the guest: %v, want content with sha256 %x", path, r, sum)
		}
	}
}

// expectedPCR15 is PCR 15 after one extend (from all zero) with the event
// cfs measures for d: SHA-256(0³² ‖ SHA-256(event)).
func expectedPCR15(t *testing.T, d *deployment) (string, string) {
	t.Helper()
	dg, err := fsverity.ParseDigest(d.ImageDigest)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := hex.DecodeString(d.Commit)
	if err != nil || len(cb) != 32 || len(d.KeyIDs) == 0 {
		t.Fatalf("status data of %s: commit %q keys %v", d.Name, d.Commit, d.KeyIDs)
	}
	event, err := tpm.RootEvent("sha256", dg, [32]byte(cb), d.KeyIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	ev := sha256.Sum256([]byte(event))
	pcr := sha256.Sum256(append(make([]byte, 32), ev[:]...))
	return hex.EncodeToString(pcr[:]), event
}

// TestGoodBoot: the initrd unit mounts the composefs root with
// verity=require, the digest is unsealed from /dev/tpmrm0, PCR 15 was
// extended, and the guest reports the commit and digest that cfs-deploy
// status --json gave on the host.
func TestGoodBoot(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	d := fx.Main["req"]
	res := boot(t, directBoot("good", d, c.disk, c.tpm))
	g := requireGuest(t, res)
	checkBootedAs(t, g, d)
	r := g.record.TPM
	if r.Mode != "required" || !r.Present || !r.Enrolled || !r.Unsealed || !r.Measured || r.MeasurePCR != 15 {
		t.Errorf("booted record tpm = %+v: want mode required, present, enrolled, unsealed, measured into PCR 15", r)
	}
	if g.tpm["dev"] != "present" {
		t.Errorf("guest: /dev/tpmrm0 %s", g.tpm["dev"])
	}
	wantPCR, event := expectedPCR15(t, d)
	if g.tpm["pcr15"] != wantPCR || r.Event != event {
		t.Errorf("PCR 15 = %s (event %q), want %s: one extend with %q", g.tpm["pcr15"], r.Event, wantPCR, event)
	}
	for _, msg := range []string{
		`cfs-initramfs\[\d+\]: .*msg="signature verified" commit=` + d.Commit,
		`cfs-initramfs\[\d+\]: .*msg="sealed digest unsealed from the TPM" digest=` + d.ImageDigest,
		`cfs-initramfs\[\d+\]: .*msg="composefs mounted" .*verity=kernel`,
		`cfs-initramfs\[\d+\]: .*msg=measured pcr=15`,
	} {
		if !regexp.MustCompile(msg).MatchString(res.log) {
			t.Errorf("serial log %s lacks %s", res.logPath, msg)
		}
	}
	// The initrd unit did it, and the initrd switched root into it.
	if !regexp.MustCompile(`Finished .*cfs-mount-root`).MatchString(res.log) || !switchRootRE.MatchString(res.log) {
		t.Errorf("serial log %s: cfs-mount-root.service did not finish before the switch root", res.logPath)
	}
	checkRead(t, g, canaryPath, pseudoRandom(1, 64<<10), "")
	checkRead(t, g, tamperPath, pseudoRandom(2, 64<<10), "")
	if _, ok := res.guestLine("boot-complete"); !ok {
		t.Errorf("the guest did not complete its boot; serial log %s", res.logPath)
	}
	// cfs-bless's job after boot-complete: the anti-rollback counter goes
	// up to the commit's rollback index (1).
	if l, _ := res.guestLine("bless-tpm exit="); l != "bless-tpm exit=0" {
		t.Errorf("cfs-initramfs bless in the guest: %q", l)
	}
	if l, _ := res.guestLine("bless-tpm: blessed"); !strings.HasSuffix(l, "rollback index 1, counter 0 -> 1") {
		t.Errorf("cfs-initramfs bless in the guest: %q, want the counter raised from 0 to 1", l)
	}
}

// TestRuntimeTamper: one object file modified on the disk image after
// the deployment (one byte, in place, as an offline attacker would):
// reading that file in the guest fails with EIO (fs-verity in the kernel),
// the rest of the system runs.
func TestRuntimeTamper(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	content := pseudoRandom(2, 64<<10)
	obj := "/cfs/repo/objects/" + fsverity.DigestBytes(content).ObjectPath()
	if got := debugfsCat(t, c.disk, obj); string(got) != string(content) {
		t.Fatalf("object %s on the image is not %s's content", obj, tamperPath)
	}
	flipFileByte(t, c.disk, obj, 5000)
	if got := debugfsCat(t, c.disk, obj); string(got) == string(content) || len(got) != len(content) {
		t.Fatalf("the tampering did not change %s", obj)
	}
	d := fx.Main["req"]
	res := boot(t, directBoot("runtime-tamper", d, c.disk, c.tpm))
	g := requireGuest(t, res)
	checkBootedAs(t, g, d)
	checkRead(t, g, tamperPath, nil, "EIO")
	checkRead(t, g, canaryPath, pseudoRandom(1, 64<<10), "")
	if _, ok := res.guestLine("boot-complete"); !ok {
		t.Errorf("the guest did not complete its boot; serial log %s", res.logPath)
	}
	// The kernel says why: the block's hash is not the one in the Merkle
	// tree (the object's inode on the root disk).
	if !corruptedRE.MatchString(res.log) {
		t.Errorf("serial log %s: no fs-verity FILE CORRUPTED message from the kernel", res.logPath)
	}
}

var corruptedRE = regexp.MustCompile(`fs-verity \(vda, inode \d+\): FILE CORRUPTED!`)

// requireRefused checks that the initrd stopped in the emergency target
// with cfs-initramfs's message naming the check (and the other patterns),
// and that the root was never switched to.
func requireRefused(t *testing.T, res *bootResult, check string, patterns ...string) {
	t.Helper()
	if !res.stopped {
		t.Fatalf("the boot did not stop in the emergency target (powered off %v, timed out %v); serial log %s:\n%s",
			res.exited, res.timedOut, res.logPath, lastLines(res.log, 40))
	}
	if !regexp.MustCompile(`Reached target .*emergency\.target`).MatchString(res.log) {
		t.Errorf("serial log %s: emergency.target not reached", res.logPath)
	}
	if !strings.Contains(res.log, "See 'systemctl status cfs-mount-root.service' for details.") {
		t.Errorf("serial log %s: systemd does not report cfs-mount-root.service failed", res.logPath)
	}
	msg := regexp.MustCompile(`cfs-initramfs\[\d+\]: cfs-initramfs: error: ` + regexp.QuoteMeta(check) + ` check failed[^\n]*`).FindString(res.log)
	if msg == "" {
		t.Fatalf("serial log %s: no cfs-initramfs error naming the %q check:\n%s", res.logPath, check, grepLines(res.log, "cfs-initramfs"))
	}
	t.Logf("refusal: %s", strings.TrimSpace(msg))
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(msg) {
			t.Errorf("the refusal does not match %s:\n%s", p, msg)
		}
	}
	if switchRootRE.MatchString(res.log) || len(res.guestLines()) > 0 {
		t.Errorf("serial log %s: the root was switched to", res.logPath)
	}
}

var switchRootRE = regexp.MustCompile(`(Reached target|Starting) .*initrd-switch-root`)

func grepLines(log, sub string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBootTamperImage: one flipped byte in the deployed composefs image
// on the disk: the initrd refuses the deployment and stops in the
// emergency target, naming the check.
func TestBootTamperImage(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	d := fx.Main["req"]
	img := d.Deployment + "/image.cfs"
	before := debugfsCat(t, c.disk, img)
	if got := fsverity.DigestBytes(before).String(); got != d.ImageDigest {
		t.Fatalf("%s on the image has digest %s, the entry says %s", img, got, d.ImageDigest)
	}
	flipFileByte(t, c.disk, img, 1024+0x20) // in the EROFS superblock
	if got := fsverity.DigestBytes(debugfsCat(t, c.disk, img)).String(); got == d.ImageDigest {
		t.Fatalf("the tampering did not change %s", img)
	}
	res := boot(t, directBoot("boot-tamper-image", d, c.disk, c.tpm))
	// fs-verity on image.cfs turns the flipped block into EIO when
	// cfs-initramfs reads the image.
	requireRefused(t, res, "image digest", regexp.QuoteMeta(d.Deployment), "fs-verity refuses to read \\(EIO\\): the image file was modified on disk", "input/output error")
	if !corruptedRE.MatchString(res.log) {
		t.Errorf("serial log %s: no fs-verity FILE CORRUPTED message from the kernel", res.logPath)
	}
}

// TestBootTamperEntryDigest: a boot entry whose composefs= names another
// (validly signed) deployment's image digest: refused, naming the check
// and both digests.
func TestBootTamperEntryDigest(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	d, other := *fx.Main["req"], fx.Main["ifp"]
	d.Options = strings.Replace(d.Options, "composefs="+d.ImageDigest, "composefs="+other.ImageDigest, 1)
	if !strings.Contains(d.Options, other.ImageDigest) {
		t.Fatalf("options %q have no composefs=", fx.Main["req"].Options)
	}
	res := boot(t, directBoot("boot-tamper-entry-digest", &d, c.disk, c.tpm))
	requireRefused(t, res, "command line digest",
		"expected composefs="+fx.Main["req"].ImageDigest, "actual composefs="+other.ImageDigest)
}

// TestTPMPCR7Changed: the deployments are sealed (in the guest) under one
// OVMF variable store; booted with another (Microsoft keys enrolled,
// Secure Boot on), PCR 7 differs and tpm = required refuses, naming PCR 7
// with the sealed and the current value.
func TestTPMPCR7Changed(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	dir := filepath.Dir(c.disk)
	varsA, varsB := filepath.Join(dir, "vars-a.fd"), filepath.Join(dir, "vars-b.fd")
	if err := copyFile(ovmfVars, varsA); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(ovmfVarsMS, varsB); err != nil {
		t.Fatal(err)
	}
	// Re-seal under store A, as cfs-deploy tpm reseal after a firmware
	// change would.
	res := boot(t, machine{name: "pcr7-reseal-store-a", kernel: "/boot/vmlinuz-" + fx.Kver, initrd: fx.ProvInitrd,
		append: "console=ttyS0 cfsvm.provision=1 cfsvm.disks=/dev/vda cfsvm.reseal=/dev/vda",
		disks:  []string{c.disk}, tpmState: c.tpm, vars: varsA})
	if err := provisionResult(t, res); err != nil {
		t.Fatalf("re-sealing under store A: %v", err)
	}
	tpmA, _ := res.guestLine("tpm ")
	pcr7A := fields(tpmA[len("tpm "):])["pcr7"]
	t.Logf("PCR 7 with store A: %s", pcr7A)

	d := fx.Main["req"]
	m := directBoot("pcr7-boot-store-b", d, c.disk, c.tpm)
	m.vars = varsB
	res = boot(t, m)
	requireRefused(t, res, "tpm", regexp.QuoteMeta(d.Deployment),
		`PCR 7 \(sha256\): expected `+pcr7A+`, current [0-9a-f]{64}`)
	if m := regexp.MustCompile(`PCR 7 \(sha256\): expected [0-9a-f]{64}, current ([0-9a-f]{64})`).FindStringSubmatch(res.log); m == nil || m[1] == pcr7A {
		t.Errorf("PCR 7 with store B: %v, with store A %s: want a different value", m, pcr7A)
	}
}

const ovmfVarsMS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"

// TestTPMIfPresentWithoutTPM: the deployment whose initramfs says
// tpm = if-present boots on a machine without a TPM, with signature
// checks and kernel fs-verity, and says that it does.
func TestTPMIfPresentWithoutTPM(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	d := fx.Main["ifp"]
	res := boot(t, directBoot("if-present-no-tpm", d, c.disk, ""))
	g := requireGuest(t, res)
	checkBootedAs(t, g, d)
	r := g.record.TPM
	if r.Mode != "if-present" || r.Present || r.Unsealed || r.Measured || !strings.Contains(r.Note, "signature checks only") {
		t.Errorf("booted record tpm = %+v: want mode if-present, no TPM, a note on signature checks only", r)
	}
	if g.tpm["dev"] != "absent" {
		t.Errorf("guest: /dev/tpmrm0 %s", g.tpm["dev"])
	}
	if !regexp.MustCompile(`cfs-initramfs\[\d+\]: .*no TPM \(mode if-present\): booting with signature checks only`).MatchString(res.log) {
		t.Errorf("serial log %s does not say it boots without a TPM:\n%s", res.logPath, grepLines(res.log, "cfs-initramfs"))
	}
	if !regexp.MustCompile(`cfs-initramfs\[\d+\]: .*msg="signature verified" commit=` + d.Commit).MatchString(res.log) {
		t.Errorf("serial log %s: no signature check", res.logPath)
	}
	checkRead(t, g, canaryPath, pseudoRandom(1, 64<<10), "")
}

// TestTPMRequiredWithoutTPM: tpm = required on a machine without a TPM
// refuses to boot.
func TestTPMRequiredWithoutTPM(t *testing.T) {
	fx := getFixture(t)
	c := copyMain(t, fx)
	d := fx.Main["req"]
	res := boot(t, directBoot("required-no-tpm", d, c.disk, ""))
	requireRefused(t, res, "tpm", regexp.QuoteMeta(d.Deployment), `mode required`)
}
