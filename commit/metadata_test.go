package commit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

func sampleMetadata() *Metadata {
	parent := ID{1, 2, 3}
	return &Metadata{
		Schema:        SchemaV1,
		Architecture:  "x86_64",
		Parent:        &parent,
		Timestamp:     1700000000,
		Subject:       "Release 1 <&>",
		Version:       "1.0",
		RollbackIndex: 3,
		Ref:           "os/x86_64/stable",
		Image:         Image{Digest: fsverity.Digest{9}, FormatVersion: 1, Size: 16384, Algorithm: "sha256"},
		Dump:          Dump{Digest: fsverity.Digest{8}, Size: 100},
		Kernel: &Kernel{Version: "6.12.0", Vmlinuz: FileRef{Path: "/usr/lib/modules/6.12.0/vmlinuz", Digest: fsverity.Digest{7}, Size: 10},
			Initramfs: &FileRef{Path: "/usr/lib/modules/6.12.0/initramfs.img", Digest: fsverity.Digest{6}, Size: 20}},
		Objects:  Objects{Count: 5, Size: 500},
		Metadata: map[string]string{"z": "last", "a": "first"},
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	m := sampleMetadata()
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := m2.Canonical()
	if !bytes.Equal(b, b2) || IDOf(b) != IDOf(b2) {
		t.Fatalf("round trip changed bytes:\n%s\n%s", b, b2)
	}
	if !strings.Contains(string(b), `"subject":"Release 1 <&>"`) {
		t.Errorf("HTML escaping in canonical form: %s", b)
	}
}

// Canonical form has keys sorted at every level: re-encoding through a
// generic map (which encoding/json sorts) gives the same bytes.
func TestCanonicalKeysSorted(t *testing.T) {
	b, err := sampleMetadata().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), b) {
		t.Fatalf("keys not sorted:\n%s\n%s", b, buf.Bytes())
	}
}

func TestParseRefusesNonCanonical(t *testing.T) {
	b, err := sampleMetadata().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"indented":      bytes.Replace(b, []byte(`{"architecture"`), []byte("{ \"architecture\""), 1),
		"unknown field": bytes.Replace(b, []byte(`{"architecture"`), []byte(`{"evil":1,"architecture"`), 1),
		"trailing data": append(append([]byte{}, b...), []byte("{}")...),
		"no newline":    b[:len(b)-1],
		"truncated":     b[:len(b)/2],
		"bad schema":    bytes.Replace(b, []byte(SchemaV1), []byte("cfs.commit.v9"), 1),
	}
	for name, in := range cases {
		if _, err := Parse(in); !errors.Is(err, ErrInvalidMetadata) {
			t.Errorf("%s: got %v, want ErrInvalidMetadata", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	m := sampleMetadata()
	m.Image.Digest = fsverity.Digest{}
	m.Architecture = ""
	err := m.Validate()
	if !errors.Is(err, ErrInvalidMetadata) || !strings.Contains(err.Error(), "no image digest") || !strings.Contains(err.Error(), "no architecture") {
		t.Fatalf("got %v", err)
	}
}

func TestParseID(t *testing.T) {
	id := IDOf([]byte("x"))
	p, err := ParseID(id.String())
	if err != nil || p != id {
		t.Fatalf("%v %v", p, err)
	}
	if _, err := ParseID("abc"); err == nil {
		t.Fatal("short id accepted")
	}
	if _, err := ParseID(strings.Repeat("g", 64)); err == nil {
		t.Fatal("non-hex id accepted")
	}
}
