package fsverity

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestLanesAssemblyGenerated checks that sha256x8_amd64.s is what
// internal/genlanes writes (go generate ./composefs/fsverity).
func TestLanesAssemblyGenerated(t *testing.T) {
	out := filepath.Join(t.TempDir(), "gen.s")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if msg, err := exec.Command(goTool, "run", "./internal/genlanes", out).CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/genlanes: %v\n%s", err, msg)
	}
	got, err := os.ReadFile("sha256x8_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("sha256x8_amd64.s differs from what internal/genlanes writes: run go generate ./composefs/fsverity")
	}
}

// TestSumLeaves8 checks the eight-lane SHA-256 against crypto/sha256 on
// random and patterned leaves, contiguous and at other strides, equal
// leaves, and buffers that are not 32-byte aligned.
func TestSumLeaves8(t *testing.T) {
	if !haveLanes {
		t.Skip("no eight-lane SHA-256 in this build (a CPU without AVX-512 VL/BW, or -tags purego): leaves are hashed one at a time, as the other tests check")
	}
	r := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 16*BlockSize+64)
	for round := range 100 {
		switch round {
		case 0:
			clear(buf)
		case 1:
			for i := range buf {
				buf[i] = 0xff
			}
		default:
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
		}
		var leaves [LeafLanes][]byte
		for i := range leaves {
			off := r.IntN(len(buf) - BlockSize + 1)
			if round%7 == 0 {
				off = i * BlockSize // contiguous
			}
			leaves[i] = buf[off : off+BlockSize]
		}
		if round%5 == 0 {
			leaves[3] = leaves[0]
		}
		var got [LeafLanes][32]byte
		n := LeafLanes - round%3 // some runs leave lanes unused
		SumLeaves(&got, &leaves, n)
		for i := range n {
			if want := sha256.Sum256(leaves[i]); got[i] != want {
				t.Fatalf("round %d lane %d: %x, want %x", round, i, got[i], want)
			}
		}
	}
}

// TestHasherLanes checks digests of inputs hashed through the lanes (runs
// of at least eight whole blocks in one Write) and not (short writes),
// against a plain implementation, at sizes around multiples of eight
// leaves and where the tree gains levels.
func TestHasherLanes(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	data := make([]byte, 1100*BlockSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	sizes := []int{BlockSize, 7 * BlockSize, 8 * BlockSize, 8*BlockSize + 1, 9 * BlockSize, 16*BlockSize - 1,
		128 * BlockSize, 128*BlockSize + 1, 136 * BlockSize, 1025 * BlockSize, len(data)}
	for _, n := range sizes {
		want := referenceDigest(data[:n])
		for _, chunk := range []int{n, 8 * BlockSize, 9 * BlockSize, 5000, 100000} {
			h := NewHasher(SHA256)
			for p := data[:n]; len(p) > 0; {
				c := min(chunk, len(p))
				h.Write(p[:c])
				p = p[c:]
			}
			if got := h.Digest(); got != want {
				t.Fatalf("size %d in %d-byte writes: %s, want %s", n, chunk, got, want)
			}
		}
	}
}

// referenceDigest is the fs-verity SHA-256 digest of data computed the
// plain way: whole tree levels in memory, one crypto/sha256 per block.
func referenceDigest(data []byte) Digest {
	pad := func(b []byte) []byte {
		if r := len(b) % BlockSize; r != 0 || len(b) == 0 {
			b = append(b[:len(b):len(b)], make([]byte, BlockSize-r)...)
		}
		return b
	}
	var root [32]byte
	if len(data) > 0 {
		level := pad(data)
		for {
			var next []byte
			for b := level; len(b) > 0; b = b[BlockSize:] {
				s := sha256.Sum256(b[:BlockSize])
				next = append(next, s[:]...)
			}
			if len(level) == BlockSize {
				copy(root[:], next)
				break
			}
			level = pad(next)
		}
	}
	var desc [descriptorSize]byte
	desc[0], desc[1], desc[2] = 1, byte(SHA256), logBlockSize
	for i := range 8 {
		desc[8+i] = byte(uint64(len(data)) >> (8 * i))
	}
	copy(desc[16:], root[:])
	return Digest(sha256.Sum256(desc[:]))
}

// BenchmarkLeaves compares hashing eight leaves at once with one at a
// time through crypto/sha256 (the SHA extensions where present).
func BenchmarkLeaves(b *testing.B) {
	buf := make([]byte, LeafLanes*BlockSize)
	if haveLanes {
		b.Run("lanes", func(b *testing.B) {
			var out [LeafLanes][32]byte
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				sumLeaves8(&out, buf)
			}
		})
	}
	b.Run("crypto-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			for i := range LeafLanes {
				sha256.Sum256(buf[i*BlockSize : (i+1)*BlockSize])
			}
		}
	})
}

// TestAddLeafHash builds digests from leaf hashes, eight leaves of
// several inputs at a time as a caller interleaving files does, the last
// leaf of each zero-padded, and compares them with the plain tree.
func TestAddLeafHash(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	sizes := []int{1, 64, 4095, 4096, 4097, 3*BlockSize + 5, 8 * BlockSize, 129*BlockSize + 7, 300 * BlockSize}
	inputs := make([][]byte, len(sizes))
	hashers := make([]*Hasher, len(sizes))
	offs := make([]int, len(sizes))
	for i, n := range sizes {
		inputs[i] = make([]byte, n)
		for j := range inputs[i] {
			inputs[i][j] = byte(r.Uint32())
		}
		hashers[i] = NewHasher(SHA256)
	}
	spare := make([]byte, BlockSize)
	for {
		var leaves [LeafLanes][]byte
		var owner [LeafLanes]int
		lanes := 0
		for i := range inputs {
			if offs[i] < len(inputs[i]) && lanes < LeafLanes {
				leaf := make([]byte, BlockSize)
				copy(leaf, inputs[i][offs[i]:])
				leaves[lanes], owner[lanes] = leaf, i
				lanes++
			}
		}
		if lanes == 0 {
			break
		}
		for l := lanes; l < LeafLanes; l++ {
			leaves[l] = spare
		}
		var sums [LeafLanes][32]byte
		SumLeaves(&sums, &leaves, LeafLanes)
		for l := range lanes {
			i := owner[l]
			n := min(BlockSize, len(inputs[i])-offs[i])
			hashers[i].AddLeafHash(&sums[l], n)
			offs[i] += n
		}
	}
	for i, h := range hashers {
		if got, want := h.Digest(), referenceDigest(inputs[i]); got != want {
			t.Errorf("size %d: %s, want %s", sizes[i], got, want)
		}
	}

	// After a partial leaf, more input is a programming error.
	h := NewHasher(SHA256)
	var sum [32]byte
	h.AddLeafHash(&sum, 100)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("AddLeafHash after a partial leaf did not panic")
			}
		}()
		h.AddLeafHash(&sum, BlockSize)
	}()
}
