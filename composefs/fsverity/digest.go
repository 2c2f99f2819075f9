// Package fsverity computes fs-verity file digests (SHA-256 and SHA-512,
// 4096-byte Merkle blocks, no salt) in Go (leaves eight at a time in
// AVX-512 vector lanes where the CPU has them), and wraps the kernel's
// FS_IOC_ENABLE_VERITY / FS_IOC_MEASURE_VERITY calls.
package fsverity

import (
	"encoding/hex"
	"fmt"
)

// BlockSize is the Merkle tree block size composefs uses (log_blocksize 12).
const BlockSize = 4096

// Digest is an fs-verity SHA-256 digest: the SHA-256 of the fs-verity
// descriptor. It names objects in a composefs object store.
type Digest [32]byte

// Digest512 is an fs-verity SHA-512 digest, as composefs-rs and bootc use.
type Digest512 [64]byte

// String returns the digest as 64 lowercase hex characters.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is the all-zero value (no digest).
func (d Digest) IsZero() bool { return d == Digest{} }

// ObjectPath returns the object store path of the digest relative to the
// store: the first two hex characters, a slash, the remaining 62.
func (d Digest) ObjectPath() string {
	var buf [2*len(d) + 1]byte // one allocation: builds call it per file
	hex.Encode(buf[:2], d[:1])
	buf[2] = '/'
	hex.Encode(buf[3:], d[1:])
	return string(buf[:])
}

// MarshalText implements encoding.TextMarshaler (hex).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses 64 hex characters (either case) into a Digest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("fs-verity sha256 digest %q: want %d hex characters, got %d", truncate(s), 2*len(d), len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return Digest{}, fmt.Errorf("fs-verity sha256 digest %q: %w", truncate(s), err)
	}
	return d, nil
}

// ParseObjectPath parses an object path "ab/cdef…" (optionally with a
// leading "/") back into a Digest.
func ParseObjectPath(p string) (Digest, error) {
	if len(p) > 0 && p[0] == '/' {
		p = p[1:]
	}
	if len(p) != 65 || p[2] != '/' {
		return Digest{}, fmt.Errorf("object path %q: want XX/ followed by 62 hex characters", truncate(p))
	}
	return ParseDigest(p[:2] + p[3:])
}

// String returns the digest as 128 lowercase hex characters.
func (d Digest512) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is the all-zero value.
func (d Digest512) IsZero() bool { return d == Digest512{} }

// ObjectPath returns "ab/cdef…" for the SHA-512 digest.
func (d Digest512) ObjectPath() string {
	s := d.String()
	return s[:2] + "/" + s[2:]
}

// MarshalText implements encoding.TextMarshaler (hex).
func (d Digest512) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (d *Digest512) UnmarshalText(b []byte) error {
	p, err := ParseDigest512(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest512 parses 128 hex characters into a Digest512.
func ParseDigest512(s string) (Digest512, error) {
	var d Digest512
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("fs-verity sha512 digest %q: want %d hex characters, got %d", truncate(s), 2*len(d), len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return Digest512{}, fmt.Errorf("fs-verity sha512 digest %q: %w", truncate(s), err)
	}
	return d, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
