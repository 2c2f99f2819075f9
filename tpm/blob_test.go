package tpm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// syntheticBlob is a structurally valid blob built without a TPM.
func syntheticBlob() *SealedBlob {
	pub := sealedPublic(bytes.Repeat([]byte{1}, 32))
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{2}, 32)})
	cd := tpm2.TPMSCreationData{
		PCRSelect:     pcrSelection([]int{7}),
		PCRDigest:     tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{3}, 32)},
		ParentNameAlg: tpm2.TPMAlgSHA256,
		ParentName:    tpm2.TPM2BName{Buffer: bytes.Repeat([]byte{4}, 34)},
		OutsideInfo:   tpm2.TPM2BData{Buffer: outsideInfo},
	}
	tk := tpm2.TPMTTKCreation{Tag: tpm2.TPMSTCreation, Hierarchy: tpm2.TPMRHOwner, Digest: tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{5}, 32)}}
	return &SealedBlob{
		Public:         tpm2.Marshal(pub),
		Private:        bytes.Repeat([]byte{6}, 100),
		CreationData:   tpm2.Marshal(cd),
		CreationHash:   bytes.Repeat([]byte{7}, 32),
		CreationTicket: tpm2.Marshal(tk),
		Policy: SignedPolicy{
			PCRs:   []int{7, 15},
			Values: [][]byte{bytes.Repeat([]byte{8}, 32), make([]byte, 32)},
			R:      bytes.Repeat([]byte{9}, 32),
			S:      bytes.Repeat([]byte{10}, 32),
		},
	}
}

func TestBlobRoundTrip(t *testing.T) {
	raw, err := syntheticBlob().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseSealedBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.MarshalBinary()
	if err != nil || !bytes.Equal(raw, again) {
		t.Fatalf("round trip differs: %v", err)
	}
}

func TestBlobRejects(t *testing.T) {
	good, _ := syntheticBlob().MarshalBinary()
	cases := map[string]func() []byte{
		"magic":   func() []byte { b := bytes.Clone(good); b[0] = 'X'; return b },
		"version": func() []byte { b := bytes.Clone(good); b[9] = 2; return b },
		"huge":    func() []byte { return make([]byte, MaxBlobSize+1) },
		"length overrun": func() []byte {
			b := bytes.Clone(good)
			b[10], b[11] = 0xff, 0xff
			return b
		},
		"trailing public bytes": func() []byte {
			s := syntheticBlob()
			s.Public = append(s.Public, 0)
			b, _ := s.MarshalBinary()
			return b
		},
		"pcrs not ascending": func() []byte {
			s := syntheticBlob()
			s.Policy.PCRs = []int{15, 7}
			b, _ := s.MarshalBinary()
			return b
		},
		"short creation hash": func() []byte {
			s := syntheticBlob()
			s.CreationHash = s.CreationHash[:31]
			b, _ := s.MarshalBinary()
			return b
		},
	}
	for name, mk := range cases {
		_, err := ParseSealedBlob(mk())
		if !errors.Is(err, ErrMalformedBlob) || !errors.Is(err, ErrVerification) {
			t.Errorf("%s: want ErrMalformedBlob, got %v", name, err)
		}
	}
}

func TestPayloadEncoding(t *testing.T) {
	p := testPayload(42)
	b := p.marshal()
	if len(b) != payloadSize {
		t.Fatalf("payload is %d bytes", len(b))
	}
	got, err := parsePayload(b)
	if err != nil || *got != p {
		t.Fatalf("payload round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(bytes.Clone(b), 0), append([]byte("cfs\x02"), b[4:]...)} {
		if _, err := parsePayload(bad); !errors.Is(err, ErrMalformedBlob) {
			t.Errorf("payload %x accepted", bad)
		}
	}
}

func FuzzParseSealedBlob(f *testing.F) {
	good, _ := syntheticBlob().MarshalBinary()
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseSealedBlob(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedBlob) {
				t.Fatalf("parse error is not ErrMalformedBlob: %v", err)
			}
			return
		}
		// Whatever parses re-serialises to the same bytes.
		out, err := b.MarshalBinary()
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("accepted blob does not round-trip: %v", err)
		}
	})
}
