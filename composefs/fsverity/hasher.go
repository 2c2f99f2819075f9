package fsverity

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
)

// Algorithm is an fs-verity hash algorithm. The values are the kernel's
// FS_VERITY_HASH_ALG_* numbers, as stored in the descriptor's
// hash_algorithm byte and passed to FS_IOC_ENABLE_VERITY.
type Algorithm uint8

// The hash algorithms fs-verity defines.
const (
	SHA256 Algorithm = 1
	SHA512 Algorithm = 2
)

// String returns "sha256", "sha512" or "Algorithm(N)".
func (a Algorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// Size returns the digest length in bytes (32 or 64), or 0 for an
// unknown algorithm.
func (a Algorithm) Size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// ParseAlgorithm parses "sha256" or "sha512".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "sha256":
		return SHA256, nil
	case "sha512":
		return SHA512, nil
	}
	return 0, fmt.Errorf("fs-verity hash algorithm %q: want sha256 or sha512", truncate(s))
}

// descriptorSize is the size of struct fsverity_descriptor.
const descriptorSize = 256

// logBlockSize is log2(BlockSize), the descriptor's log_blocksize.
const logBlockSize = 12

// zeroBlock supplies the zero padding of partial blocks. Never written.
var zeroBlock [BlockSize]byte

// level is one level of the Merkle tree being built: a partial block (data
// bytes for level 0, child hashes above) and how many full blocks of this
// level have been hashed into the level above.
type level struct {
	buf     [BlockSize]byte
	n       int
	emitted uint64
}

// Hasher computes an fs-verity digest of the bytes written to it, with
// 4096-byte Merkle blocks and no salt. It keeps one 4096-byte block per
// tree level, so memory does not grow with the input (a tree level is
// added for every factor of 128 (SHA-256) or 64 (SHA-512) in size).
//
// Writes of whole, aligned blocks are hashed straight from the caller's
// buffer. A Hasher is not safe for concurrent use. It is not a hash.Hash:
// Size reports the input length, as the descriptor's data_size.
type Hasher struct {
	alg    Algorithm
	hsize  int
	size   uint64
	levels []*level  // levels[0] holds data; levels[i] hashes of level i-1 blocks
	fin    hash.Hash // for padded final blocks and the descriptor
	out    [64]byte  // scratch for fin.Sum
	desc   [descriptorSize]byte
	rbuf   []byte // ReadFrom buffer, allocated on first use
}

// NewHasher returns a Hasher for alg. It panics if alg is neither SHA256
// nor SHA512 (a programming error, like an unknown crypto.Hash).
func NewHasher(alg Algorithm) *Hasher {
	h := &Hasher{alg: alg, hsize: alg.Size()}
	switch alg {
	case SHA256:
		h.fin = sha256.New()
	case SHA512:
		h.fin = sha512.New()
	default:
		panic(fmt.Sprintf("fsverity: unsupported hash algorithm %v", alg))
	}
	h.levels = []*level{new(level)}
	return h
}

// Algorithm returns the hash algorithm of h.
func (h *Hasher) Algorithm() Algorithm { return h.alg }

// Size returns the number of data bytes written since creation or Reset.
func (h *Hasher) Size() uint64 { return h.size }

// Reset restarts h for a new input, keeping its buffers.
func (h *Hasher) Reset() {
	h.size = 0
	for _, l := range h.levels {
		l.n, l.emitted = 0, 0
	}
}

// Write adds p to the input. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	h.size += uint64(n)
	l0 := h.levels[0]
	if l0.n > 0 {
		c := copy(l0.buf[l0.n:], p)
		l0.n += c
		p = p[c:]
		if l0.n < BlockSize {
			return n, nil
		}
		h.emitData(l0.buf[:])
		l0.n = 0
	}
	for len(p) >= BlockSize {
		if haveLanes && h.alg == SHA256 && len(p) >= LeafLanes*BlockSize {
			h.emitLanes(p[:LeafLanes*BlockSize])
			p = p[LeafLanes*BlockSize:]
			continue
		}
		h.emitData(p[:BlockSize])
		p = p[BlockSize:]
	}
	l0.n = copy(l0.buf[:], p)
	return n, nil
}

// emitData hashes one full data block into level 1.
func (h *Hasher) emitData(block []byte) {
	h.levels[0].emitted++
	h.hashInto(1, block)
}

// emitLanes hashes LeafLanes full data blocks at once into level 1.
func (h *Hasher) emitLanes(blocks []byte) {
	var sums [LeafLanes][32]byte
	sumLeaves8(&sums, blocks)
	for i := range sums {
		h.levels[0].emitted++
		h.appendHash(1, sums[i][:])
	}
}

// AddLeafHash adds the next n bytes of input (1 to BlockSize) by the hash
// of their Merkle leaf, computed by the caller (SumLeaves): the n bytes
// followed by zeros up to BlockSize. A leaf of fewer than BlockSize bytes
// must be the last input: nothing may be written or added after it. It
// panics on a SHA512 Hasher, after a Write that left a partial block, or
// after a partial leaf.
func (h *Hasher) AddLeafHash(sum *[32]byte, n int) {
	if h.alg != SHA256 || n < 1 || n > BlockSize || h.levels[0].n != 0 || h.size%BlockSize != 0 {
		panic("fsverity: AddLeafHash out of order")
	}
	h.size += uint64(n)
	h.levels[0].emitted++
	h.appendHash(1, sum[:])
}

// hashInto appends the hash of block to level i (see appendHash).
func (h *Hasher) hashInto(i int, block []byte) {
	var sum [64]byte
	h.appendHash(i, h.blockHash(&sum, block))
}

// blockHash returns the hash of one tree block, in sum.
func (h *Hasher) blockHash(sum *[64]byte, block []byte) []byte {
	if h.alg == SHA256 {
		s := sha256.Sum256(block)
		return append(sum[:0], s[:]...)
	}
	s := sha512.Sum512(block)
	return append(sum[:0], s[:]...)
}

// appendHash appends a block hash to level i, and hashes that level's
// block into level i+1 when it fills up.
func (h *Hasher) appendHash(i int, hash []byte) {
	var sum [64]byte
	for {
		if i == len(h.levels) {
			h.levels = append(h.levels, new(level))
		}
		l := h.levels[i]
		copy(l.buf[l.n:], hash)
		l.n += h.hsize
		if l.n < BlockSize {
			return
		}
		l.n = 0
		l.emitted++
		hash = h.blockHash(&sum, l.buf[:])
		i++
	}
}

// paddedHash returns the hash of a||b padded with zeros to BlockSize,
// in h.out, without touching the tree.
func (h *Hasher) paddedHash(a, b []byte) []byte {
	h.fin.Reset()
	h.fin.Write(a)
	h.fin.Write(b)
	h.fin.Write(zeroBlock[:BlockSize-len(a)-len(b)])
	return h.fin.Sum(h.out[:0])
}

// rootHash computes the Merkle tree root without changing h's state.
// Partial blocks are completed virtually: the pending bytes of a level plus
// the hash carried up from the level below, zero-padded. The root is the
// hash of the first level that has a single block. Empty input gives the
// all-zero root, as the kernel and fsverity-utils do.
func (h *Hasher) rootHash(dst *[64]byte) {
	*dst = [64]byte{}
	if h.size == 0 {
		return
	}
	var carry []byte
	for i := 0; ; i++ {
		l := h.levels[i]
		blocks := l.emitted
		if l.n > 0 || carry != nil {
			carry = h.paddedHash(l.buf[:l.n], carry)
			blocks++
		}
		if blocks == 1 {
			if carry == nil {
				// The single block was full and already hashed upward.
				carry = h.levels[i+1].buf[:h.hsize]
			}
			copy(dst[:], carry)
			return
		}
	}
}

// descriptor fills h.desc for the current input and returns it.
func (h *Hasher) descriptor() []byte {
	var root [64]byte
	h.rootHash(&root)
	d := &h.desc
	*d = [descriptorSize]byte{}
	d[0] = 1 // version
	d[1] = byte(h.alg)
	d[2] = logBlockSize
	d[3] = 0 // salt_size
	binary.LittleEndian.PutUint64(d[8:16], h.size)
	copy(d[16:80], root[:])
	return d[:]
}

// Sum appends the fs-verity digest of the input so far (32 bytes for
// SHA-256, 64 for SHA-512) to b. It does not change h's state: more data
// can be written afterwards.
func (h *Hasher) Sum(b []byte) []byte {
	desc := h.descriptor()
	h.fin.Reset()
	h.fin.Write(desc)
	return h.fin.Sum(b)
}

// Digest returns the SHA-256 fs-verity digest of the input so far. It
// panics if h is not a SHA256 hasher.
func (h *Hasher) Digest() Digest {
	if h.alg != SHA256 {
		panic("fsverity: Digest called on a " + h.alg.String() + " Hasher")
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// Digest512 returns the SHA-512 fs-verity digest of the input so far. It
// panics if h is not a SHA512 hasher.
func (h *Hasher) Digest512() Digest512 {
	if h.alg != SHA512 {
		panic("fsverity: Digest512 called on a " + h.alg.String() + " Hasher")
	}
	var d Digest512
	h.Sum(d[:0])
	return d
}

// readBufferSize is the read size of ReadFrom and DigestFile: a multiple
// of BlockSize so that every full read is hashed without copying.
const readBufferSize = 32 * BlockSize

// ReadFrom reads r to EOF and hashes what it reads (io.ReaderFrom, so
// io.Copy uses it). Reads are block aligned: apart from the last, every
// read fills the whole buffer and is hashed in place.
func (h *Hasher) ReadFrom(r io.Reader) (int64, error) {
	return h.readFrom(context.Background(), r)
}

func (h *Hasher) readFrom(ctx context.Context, r io.Reader) (int64, error) {
	if h.rbuf == nil {
		h.rbuf = make([]byte, readBufferSize)
	}
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		// Fill the whole buffer (so writes stay block aligned) unless
		// the reader ends or fails. io.ReadFull is not used: it would
		// turn a reader's own io.ErrUnexpectedEOF into a clean end.
		n := 0
		var err error
		for n < len(h.rbuf) && err == nil {
			var m int
			m, err = r.Read(h.rbuf[n:])
			n += m
		}
		h.Write(h.rbuf[:n])
		total += int64(n)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return total, nil
		default:
			return total, err
		}
	}
}

// hasherPools recycles Hashers (with their tree levels and read buffer)
// across the one-shot helpers below, indexed by Algorithm.
var hasherPools = [...]sync.Pool{
	SHA256: {New: func() any { return NewHasher(SHA256) }},
	SHA512: {New: func() any { return NewHasher(SHA512) }},
}

func getHasher(alg Algorithm) *Hasher {
	h := hasherPools[alg].Get().(*Hasher)
	h.Reset()
	return h
}

func putHasher(h *Hasher) { hasherPools[h.alg].Put(h) }

// DigestReader returns the SHA-256 fs-verity digest of everything r
// yields, and the number of bytes read.
func DigestReader(r io.Reader) (Digest, int64, error) {
	h := getHasher(SHA256)
	defer putHasher(h)
	n, err := h.ReadFrom(r)
	if err != nil {
		return Digest{}, n, err
	}
	return h.Digest(), n, nil
}

// DigestReader512 returns the SHA-512 fs-verity digest of everything r
// yields, and the number of bytes read.
func DigestReader512(r io.Reader) (Digest512, int64, error) {
	h := getHasher(SHA512)
	defer putHasher(h)
	n, err := h.ReadFrom(r)
	if err != nil {
		return Digest512{}, n, err
	}
	return h.Digest512(), n, nil
}

// DigestBytes returns the SHA-256 fs-verity digest of b.
func DigestBytes(b []byte) Digest {
	h := getHasher(SHA256)
	defer putHasher(h)
	h.Write(b)
	return h.Digest()
}

// DigestBytes512 returns the SHA-512 fs-verity digest of b.
func DigestBytes512(b []byte) Digest512 {
	h := getHasher(SHA512)
	defer putHasher(h)
	h.Write(b)
	return h.Digest512()
}

// DigestFile returns the SHA-256 fs-verity digest and the size of the file
// at path, computed in user space. It streams the file through a fixed
// buffer and stops early when ctx is cancelled.
func DigestFile(ctx context.Context, path string) (Digest, int64, error) {
	h := getHasher(SHA256)
	defer putHasher(h)
	n, err := h.digestFile(ctx, path)
	if err != nil {
		return Digest{}, n, err
	}
	return h.Digest(), n, nil
}

// DigestFile512 is DigestFile with SHA-512.
func DigestFile512(ctx context.Context, path string) (Digest512, int64, error) {
	h := getHasher(SHA512)
	defer putHasher(h)
	n, err := h.digestFile(ctx, path)
	if err != nil {
		return Digest512{}, n, err
	}
	return h.Digest512(), n, nil
}

// digestFile resets h and hashes the file at path into it.
func (h *Hasher) digestFile(ctx context.Context, path string) (int64, error) {
	h.Reset()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := h.readFrom(ctx, f)
	if err != nil {
		return n, fmt.Errorf("fs-verity digest %s: %w", path, err)
	}
	return n, nil
}
