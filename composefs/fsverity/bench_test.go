package fsverity

import (
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"testing"
)

// Run: go test -run '^$' -bench . ./composefs/fsverity/
// Compare Digest/* with RawHash/* (plain crypto hashing of the same bytes).

const benchSize = 64 << 20

func benchData(b *testing.B) []byte {
	b.Helper()
	buf := make([]byte, benchSize)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	return buf
}

func BenchmarkDigest(b *testing.B) {
	buf := benchData(b)
	for _, alg := range []Algorithm{SHA256, SHA512} {
		b.Run(alg.String(), func(b *testing.B) {
			h := NewHasher(alg)
			out := make([]byte, 0, 64)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				h.Reset()
				h.Write(buf)
				out = h.Sum(out[:0])
			}
		})
	}
}

func BenchmarkRawHash(b *testing.B) {
	buf := benchData(b)
	for _, c := range []struct {
		name string
		new  func() hash.Hash
	}{{"sha256", sha256.New}, {"sha512", sha512.New}} {
		b.Run(c.name, func(b *testing.B) {
			h := c.new()
			out := make([]byte, 0, 64)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				h.Reset()
				h.Write(buf)
				out = h.Sum(out[:0])
			}
		})
	}
}

// BenchmarkDigestUnaligned writes in 10000-byte chunks, so every block
// goes through the Hasher's buffer.
func BenchmarkDigestUnaligned(b *testing.B) {
	buf := benchData(b)
	h := NewHasher(SHA256)
	b.SetBytes(benchSize)
	for b.Loop() {
		h.Reset()
		for p := buf; len(p) > 0; {
			n := min(10000, len(p))
			h.Write(p[:n])
			p = p[n:]
		}
		_ = h.Digest()
	}
}
