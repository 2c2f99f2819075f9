package erofs

import "math/bits"

// xxh32 primes (xxHash specification).
const (
	xxhPrime1 uint32 = 2654435761
	xxhPrime2 uint32 = 2246822519
	xxhPrime3 uint32 = 3266489917
	xxhPrime4 uint32 = 668265263
	xxhPrime5 uint32 = 374761393
)

func xxh32Round(acc, lane uint32) uint32 {
	acc += lane * xxhPrime2
	acc = bits.RotateLeft32(acc, 13)
	return acc * xxhPrime1
}

func xxhLE32[S ~string | ~[]byte](b S) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// xxh32 is the 32-bit xxHash of b with the given seed. EROFS uses it for
// the per-inode xattr name bloom filter (spec §7.4).
func xxh32[S ~string | ~[]byte](b S, seed uint32) uint32 {
	n := len(b)
	var h uint32
	if n >= 16 {
		v1 := seed + xxhPrime1 + xxhPrime2
		v2 := seed + xxhPrime2
		v3 := seed
		v4 := seed - xxhPrime1
		for len(b) >= 16 {
			v1 = xxh32Round(v1, xxhLE32(b[0:4]))
			v2 = xxh32Round(v2, xxhLE32(b[4:8]))
			v3 = xxh32Round(v3, xxhLE32(b[8:12]))
			v4 = xxh32Round(v4, xxhLE32(b[12:16]))
			b = b[16:]
		}
		h = bits.RotateLeft32(v1, 1) + bits.RotateLeft32(v2, 7) +
			bits.RotateLeft32(v3, 12) + bits.RotateLeft32(v4, 18)
	} else {
		h = seed + xxhPrime5
	}
	h += uint32(n)
	for len(b) >= 4 {
		h += xxhLE32(b[0:4]) * xxhPrime3
		h = bits.RotateLeft32(h, 17) * xxhPrime4
		b = b[4:]
	}
	for i := 0; i < len(b); i++ {
		h += uint32(b[i]) * xxhPrime5
		h = bits.RotateLeft32(h, 11) * xxhPrime1
	}
	h ^= h >> 15
	h *= xxhPrime2
	h ^= h >> 13
	h *= xxhPrime3
	h ^= h >> 16
	return h
}
