package tpm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestBlessMonotonic(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, _ := enroll(t, inst)
	if c, err := ReadCounter(tp, enr); err != nil || c != 0 {
		t.Fatalf("fresh counter = %d, %v; want 0", c, err)
	}
	for _, step := range []uint64{1, 1, 4} {
		if err := Bless(tp, enr, step); err != nil {
			t.Fatalf("Bless(%d): %v", step, err)
		}
		if c, err := ReadCounter(tp, enr); err != nil || c != step {
			t.Fatalf("after Bless(%d): counter %d, %v", step, c, err)
		}
	}
	err := Bless(tp, enr, 3)
	wantRefusal(t, tp, err, ErrRollback)
	var re *RollbackError
	if !errors.As(err, &re) || re.Op != "bless" || re.Counter != 4 || re.RollbackIndex != 3 {
		t.Fatalf("want a bless refusal 3 < 4, got %v", err)
	}
	if err := Bless(tp, enr, 4+MaxBlessStep+1); err == nil {
		t.Fatal("a step above MaxBlessStep was accepted")
	}
	if c, _ := ReadCounter(tp, enr); c != 4 {
		t.Fatalf("refused blesses moved the counter to %d", c)
	}
	assertNoHandles(t, tp, "after Bless")
}

// tpm2-tools agree with what the library reads: PCRs, the counter's public
// area and its value.
func TestToolsCrossCheck(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	enr, key := enroll(t, inst)
	tp := inst.tpm(t)
	if err := Bless(tp, enr, 3); err != nil {
		t.Fatal(err)
	}
	ev, _ := RootEvent("sha256", testDigest, testCommit, "k")
	if err := Measure(tp, 15, ev, ""); err != nil {
		t.Fatal(err)
	}
	pcrs, err := ReadPCRs(tp, []int{7, 15})
	if err != nil {
		t.Fatal(err)
	}
	counter, err := ReadCounter(tp, enr)
	if err != nil {
		t.Fatal(err)
	}
	raw := seal(t, tp, enr, key, testPayload(3)) // exercised before the tools run

	out := inst.tool(t, "tpm2_pcrread", "sha256:7,15")
	for _, p := range []int{7, 15} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\s*:\s*0x([0-9A-Fa-f]{64})\s*$`, p))
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("tpm2_pcrread output lacks PCR %d:\n%s", p, out)
		}
		if !strings.EqualFold(m[1], hex.EncodeToString(pcrs[p])) {
			t.Errorf("PCR %d: tpm2_pcrread %s, library %x", p, m[1], pcrs[p])
		}
	}

	idx := fmt.Sprintf("0x%x", enr.NVIndex)
	out = inst.tool(t, "tpm2_nvreadpublic", idx)
	if !strings.Contains(out, "name: "+hex.EncodeToString(enr.NVName)) {
		t.Errorf("tpm2_nvreadpublic name differs from enrolled %x:\n%s", []byte(enr.NVName), out)
	}
	for _, attr := range []string{"nt=0x1", "authwrite", "authread", "no_da", "written"} {
		if !strings.Contains(out, attr) {
			t.Errorf("tpm2_nvreadpublic lacks attribute %s:\n%s", attr, out)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*size: 8\s*$`).MatchString(out) {
		t.Errorf("tpm2_nvreadpublic size is not 8:\n%s", out)
	}

	val := inst.tool(t, "tpm2_nvread", idx, "-C", idx, "-s", "8")
	if len(val) != 8 {
		t.Fatalf("tpm2_nvread returned %d bytes", len(val))
	}
	rawCounter := binary.BigEndian.Uint64([]byte(val))
	if rawCounter != enr.CounterBase+counter || counter != 3 {
		t.Fatalf("tpm2_nvread raw %d, library counter %d + base %d", rawCounter, counter, enr.CounterBase)
	}
	inst.tool(t, "tpm2_flushcontext", "-t")

	// The library still works after the tools used the TPM (the blob was
	// sealed before measuring, so it is latched: PCR 15 is the refusal).
	_, err = Unseal(inst.tpm(t), enr, raw, expectFor(testPayload(3)))
	wantRefusal(t, inst.tpm(t), err, ErrPCRMismatch)
}

// Undefining the counter (possible with an empty owner auth) is detected,
// and redefining it does not roll it back: a new counter starts above
// every counter the TPM ever deleted.
func TestCounterUndefineRedefine(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	if err := Bless(tp, enr, 7); err != nil {
		t.Fatal(err)
	}
	p := testPayload(7)
	raw := seal(t, tp, enr, key, p)

	undefine := func() {
		t.Helper()
		if _, err := (tpm2.NVUndefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(enr.NVIndex), Name: tpm2.TPM2BName{Buffer: enr.NVName}},
		}).Execute(tp); err != nil {
			t.Fatalf("undefine: %v", err)
		}
	}
	undefine()
	_, err := ReadCounter(tp, enr)
	wantRefusal(t, tp, err, ErrCounter)
	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrCounter)

	// Redefined with the same attributes: same name once written, and the
	// value did not go down.
	pub := counterPublic(enr.NVIndex)
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(pub),
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	name, _ := nvName(pub)
	if err := incrementCounter(tp, enr.NVIndex, name); err != nil {
		t.Fatal(err)
	}
	c, err := ReadCounter(tp, enr)
	if err != nil {
		t.Fatal(err)
	}
	if c <= 7 {
		t.Fatalf("redefined counter reads %d, not above the deleted one's 7", c)
	}
	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrRollback)

	// Redefined as an ordinary index holding a forged low value: another
	// name, refused.
	undefine()
	ordinary := tpm2.TPMSNVPublic{
		NVIndex:    tpm2.TPMHandle(enr.NVIndex),
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{NT: tpm2.TPMNTOrdinary, AuthWrite: true, AuthRead: true, NoDA: true},
		DataSize:   8,
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(ordinary),
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	oname, _ := nvName(ordinary)
	h := tpm2.AuthHandle{Handle: tpm2.TPMHandle(enr.NVIndex), Name: tpm2.TPM2BName{Buffer: oname}, Auth: tpm2.PasswordAuth(nil)}
	if _, err := (tpm2.NVWrite{AuthHandle: h, NVIndex: h, Data: tpm2.TPM2BMaxNVBuffer{Buffer: u64be(enr.CounterBase)}}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrCounter)
}

// TPMA_NV_POLICY_DELETE, which would stop even the owner from undefining
// the counter, cannot be set on an owner-created index (the documented
// residual risk of an empty owner auth).
func TestPolicyDeleteNeedsPlatform(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	pub := counterPublic(DefaultNVIndex)
	pub.Attributes.PolicyDelete = true
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(pub),
	}.Execute(inst.tpm(t))
	if err == nil {
		t.Fatal("owner defined an index with TPMA_NV_POLICY_DELETE; update docs/security.md and counterPublic")
	}
	t.Logf("owner NV_DefineSpace with POLICY_DELETE: %v", err)
}

func TestEnrollReuse(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	if err := Bless(tp, enr, 2); err != nil {
		t.Fatal(err)
	}

	// Without the previous enrollment an existing counter is an error.
	if _, _, err := Enroll(tp, EnrollOpts{}); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("re-enroll over an existing counter: want ErrEnrollment, got %v", err)
	}
	// With it, the counter, its base and the persisted SRK are kept.
	again, gen, err := Enroll(tp, EnrollOpts{PolicyKey: &key.PublicKey, Previous: enr})
	if err != nil {
		t.Fatal(err)
	}
	if gen != nil {
		t.Fatal("Enroll generated a key although one was given")
	}
	if again.CounterBase != enr.CounterBase || string(again.NVName) != string(enr.NVName) ||
		string(again.SRKName) != string(enr.SRKName) || again.SRKHandle != enr.SRKHandle ||
		again.PolicyKey != enr.PolicyKey {
		t.Fatalf("re-enrollment changed the enrollment:\nold %+v\nnew %+v", enr, again)
	}
	if c, err := ReadCounter(tp, again); err != nil || c != 2 {
		t.Fatalf("counter after re-enroll: %d %v", c, err)
	}
	// ReplaceCounter redefines: the raw value does not go down.
	replaced, _, err := Enroll(tp, EnrollOpts{PolicyKey: &key.PublicKey, ReplaceCounter: true})
	if err != nil {
		t.Fatal(err)
	}
	if replaced.CounterBase <= enr.CounterBase+2 {
		t.Fatalf("replaced counter base %d not above the old raw value %d", replaced.CounterBase, enr.CounterBase+2)
	}
	assertNoHandles(t, tp, "after re-enrollments")

	// The persisted SRK evicted: the SRK is recreated from the owner seed
	// with the same name and unsealing still works.
	p := testPayload(0)
	raw := seal(t, tp, replaced, key, p)
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: tpm2.TPMHandle(replaced.SRKHandle), Name: tpm2.TPM2BName{Buffer: replaced.SRKName}},
		PersistentHandle: tpm2.TPMHandle(replaced.SRKHandle),
	}).Execute(tp); err != nil {
		t.Fatalf("evict SRK: %v", err)
	}
	if _, err := Unseal(tp, replaced, raw, expectFor(p)); err != nil {
		t.Fatalf("unseal with the SRK recreated: %v", err)
	}
	assertNoHandles(t, tp, "after unseal with a transient SRK")
}

// A persistent SRK handle taken by another key is left alone; the SRK is
// then used transiently.
func TestEnrollSRKHandleTaken(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	other := tpm2.ECCSRKTemplate
	other.ObjectAttributes.NoDA = false // not the TCG template
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(other),
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: tpm2.TPMHandle(DefaultSRKHandle),
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	flush(tp, created.ObjectHandle)
	enr, key := enroll(t, inst)
	if enr.SRKHandle != 0 {
		t.Fatalf("enrolled SRK handle 0x%x, want 0 (transient)", enr.SRKHandle)
	}
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(DefaultSRKHandle)}.Execute(tp)
	if err != nil || string(rp.Name.Buffer) != string(created.Name.Buffer) {
		t.Fatalf("the other key at 0x81000001 was touched: %v", err)
	}
	p := testPayload(0)
	raw := seal(t, tp, enr, key, p)
	if _, err := Unseal(tp, enr, raw, expectFor(p)); err != nil {
		t.Fatal(err)
	}
	assertNoHandles(t, tp, "transient SRK round trip")
}
