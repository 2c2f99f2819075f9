package tpm

import (
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ReadPCRs reads PCRs of the SHA-256 bank. The TPM may return fewer PCRs
// than asked per call; ReadPCRs asks again for the rest.
func ReadPCRs(t transport.TPM, pcrs []int) (map[int][]byte, error) {
	want := slices.Clone(pcrs)
	slices.Sort(want)
	want = slices.Compact(want)
	for _, p := range want {
		if p < 0 || p > 23 {
			return nil, fmt.Errorf("tpm: PCR %d out of range 0-23", p)
		}
	}
	out := make(map[int][]byte, len(want))
	for len(want) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(want)}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: read PCRs %v: %w", want, err)
		}
		var got []int
		for _, sel := range rsp.PCRSelectionOut.PCRSelections {
			if sel.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for i, b := range sel.PCRSelect {
				for bit := 0; bit < 8; bit++ {
					if b&(1<<bit) != 0 {
						got = append(got, i*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("tpm: PCR read of %v returned %d selected PCRs and %d values (is the SHA-256 bank allocated?)",
				want, len(got), len(rsp.PCRValues.Digests))
		}
		for i, p := range got {
			if !slices.Contains(want, p) {
				return nil, fmt.Errorf("tpm: PCR read returned unrequested PCR %d", p)
			}
			out[p] = rsp.PCRValues.Digests[i].Buffer
		}
		want = slices.DeleteFunc(want, func(p int) bool { _, ok := out[p]; return ok })
	}
	return out, nil
}

// PolicyValues builds the pcrValues argument of Seal and SignPolicy from
// the running system: the current values of the enrollment's literal PCRs,
// and measurePre for the measure PCR — its value just before cfs measures
// into it at boot (nil means all zero, its value after a TPM reset when
// nothing else extends it first; with LUKS measuring into PCR 15 first,
// pass the value the initramfs observed before unsealing).
func PolicyValues(t transport.TPM, enr *Enrollment, measurePre []byte) (map[int][]byte, error) {
	cur, err := ReadPCRs(t, enr.PCRs)
	if err != nil {
		return nil, err
	}
	if measurePre == nil {
		measurePre = make([]byte, 32)
	}
	if len(measurePre) != 32 {
		return nil, fmt.Errorf("tpm: pre-measurement value of PCR %d is %d bytes, want 32", enr.MeasurePCR, len(measurePre))
	}
	out := make(map[int][]byte, len(cur)+1)
	for _, p := range enr.PCRs {
		out[p] = cur[p]
	}
	out[enr.MeasurePCR] = slices.Clone(measurePre)
	return out, nil
}
