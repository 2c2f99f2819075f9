package tpm

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRootEvent(t *testing.T) {
	ev, err := RootEvent("sha256", testDigest, testCommit, "ab12cd")
	if err != nil {
		t.Fatal(err)
	}
	want := "cfs-root:sha256:" + hex.EncodeToString(testDigest[:]) + ":" + hex.EncodeToString(testCommit[:]) + ":ab12cd"
	if ev != want {
		t.Fatalf("RootEvent = %q, want %q", ev, want)
	}
	for _, bad := range []struct{ alg, key string }{{"SHA256", "k"}, {"sha256", ""}, {"sha256", "a:b"}, {"", "k"}, {"sha256", "a b"}} {
		if _, err := RootEvent(bad.alg, testDigest, testCommit, bad.key); err == nil {
			t.Errorf("RootEvent(%q, %q) accepted", bad.alg, bad.key)
		}
	}
}

// The latch: once the root is measured into PCR 15, the blob sealed to
// PCR 15's pre-measurement value cannot be unsealed again until a reboot.
func TestMeasureLatch(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	enr, key := enroll(t, inst)
	p := testPayload(0)
	raw := seal(t, tp, enr, key, p)
	if _, err := Unseal(tp, enr, raw, expectFor(p)); err != nil {
		t.Fatalf("first unseal: %v", err)
	}

	ev, err := RootEvent("sha256", p.ImageDigest, p.CommitID, "key1")
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "run", "log", "systemd", "tpm2-measure.log")
	if err := Measure(tp, enr.MeasurePCR, ev, logPath); err != nil {
		t.Fatalf("Measure: %v", err)
	}
	assertNoHandles(t, tp, "after Measure")

	// PCR 15 = SHA-256(zero || SHA-256(event)).
	evSum := sha256.Sum256([]byte(ev))
	h := sha256.New()
	h.Write(make([]byte, 32))
	h.Write(evSum[:])
	wantPCR := h.Sum(nil)
	got, err := ReadPCRs(tp, []int{15})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[15], wantPCR) {
		t.Fatalf("PCR 15 = %x, want %x", got[15], wantPCR)
	}

	_, err = Unseal(tp, enr, raw, expectFor(p))
	wantRefusal(t, tp, err, ErrPCRMismatch)
	var pe *PCRMismatchError
	if !errors.As(err, &pe) || len(pe.Mismatches) != 1 || pe.Mismatches[0].PCR != 15 ||
		!bytes.Equal(pe.Mismatches[0].Expected, make([]byte, 32)) || !bytes.Equal(pe.Mismatches[0].Actual, wantPCR) {
		t.Fatalf("want PCR 15 expected zero, current %x; got %v", wantPCR, err)
	}

	// The log holds one systemd-format record with every bank's digest.
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != 0x1e || data[len(data)-1] != '\n' {
		t.Fatalf("record not framed as RS ... LF: %q", data)
	}
	recs, err := ParseEventLog(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.PCR != 15 || r.ContentType != "systemd" || r.Content.String != ev {
		t.Fatalf("record %+v", r)
	}
	s1 := sha1.Sum([]byte(ev))
	s384 := sha512.Sum384([]byte(ev))
	s512 := sha512.Sum512([]byte(ev))
	wantDigests := map[string]string{
		"sha256": hex.EncodeToString(evSum[:]),
		"sha1":   hex.EncodeToString(s1[:]),
		"sha384": hex.EncodeToString(s384[:]),
		"sha512": hex.EncodeToString(s512[:]),
	}
	if len(r.Digests) != len(wantDigests) || r.Digests[0].HashAlg != "sha256" {
		t.Fatalf("digests %+v, want every swtpm bank with sha256 first", r.Digests)
	}
	for _, d := range r.Digests {
		if wantDigests[d.HashAlg] != d.Digest {
			t.Errorf("%s digest %s, want %s", d.HashAlg, d.Digest, wantDigests[d.HashAlg])
		}
	}
	if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode: %v %v", fi.Mode(), err)
	}

	// A second measurement appends; the log replays to the PCR value.
	if err := Measure(tp, 15, "second", logPath); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(logPath)
	recs, err = ParseEventLog(data)
	if err != nil || len(recs) != 2 {
		t.Fatalf("after second measure: %d records, %v", len(recs), err)
	}
	replay := make([]byte, 32)
	for _, rec := range recs {
		d, _ := hex.DecodeString(rec.Digests[0].Digest)
		h := sha256.New()
		h.Write(replay)
		h.Write(d)
		replay = h.Sum(nil)
	}
	got, _ = ReadPCRs(tp, []int{15})
	if !bytes.Equal(got[15], replay) {
		t.Fatalf("log replays to %x, PCR 15 is %x", replay, got[15])
	}

	// After a reboot PCR 15 is zero again and the blob unseals.
	inst.reboot(t)
	tp = inst.tpm(t)
	if _, err := Unseal(tp, enr, raw, expectFor(p)); err != nil {
		t.Fatalf("unseal after reboot: %v", err)
	}
	assertNoHandles(t, tp, "after unseal following reboot")
}

func TestMeasureRefusals(t *testing.T) {
	t.Parallel()
	inst := startSWTPM(t)
	tp := inst.tpm(t)
	before, err := ReadPCRs(tp, []int{11, 12, 15})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pcr   int
		event string
	}{{11, "x"}, {12, "x"}, {24, "x"}, {-1, "x"}, {15, ""}, {15, "a\nb"}, {15, "a\x1eb"}, {15, "\xff"}} {
		if err := Measure(tp, c.pcr, c.event, ""); err == nil {
			t.Errorf("Measure(%d, %q) accepted", c.pcr, c.event)
		}
	}
	after, err := ReadPCRs(tp, []int{11, 12, 15})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{11, 12, 15} {
		if !bytes.Equal(before[p], after[p]) {
			t.Errorf("refused measurement changed PCR %d", p)
		}
	}
	// A log path that is not a regular file is refused before extending.
	dir := t.TempDir()
	if err := Measure(tp, 15, "x", dir); err == nil {
		t.Error("Measure with a directory as log accepted")
	}
	after, _ = ReadPCRs(tp, []int{15})
	if !bytes.Equal(before[15], after[15]) {
		t.Error("failed log open still extended PCR 15")
	}
}

func TestParseEventLog(t *testing.T) {
	good := "\x1e{\"pcr\":15,\"digests\":[{\"hashAlg\":\"sha256\",\"digest\":\"00\"}],\"content_type\":\"systemd\",\"content\":{\"string\":\"a\",\"eventType\":\"phase\"}}\n" +
		"\x1e{\"pcr\":11,\"digests\":[{\"hashAlg\":\"sha256\",\"digest\":\"01\"}]}\n"
	recs, err := ParseEventLog([]byte(good))
	if err != nil || len(recs) != 2 || recs[0].Content.String != "a" || recs[1].PCR != 11 {
		t.Fatalf("%+v %v", recs, err)
	}
	for _, bad := range []string{"{}", "\x1e{\"pcr\":30,\"digests\":[{}]}", "\x1e{\"digests\":[{}]}", "\x1e{", "\x1e{\"pcr\":1,\"digests\":[]}"} {
		if _, err := ParseEventLog([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if recs, err := ParseEventLog(nil); err != nil || len(recs) != 0 {
		t.Errorf("empty log: %v %v", recs, err)
	}
}
