package fsverity

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// The worked examples of spec §3, checked there against fsverity-utils.
var specVectors = []struct {
	name   string
	data   func() []byte
	root   string
	digest string
}{
	{"abc", func() []byte { return []byte("abc") },
		"73fbfd76aa2143de160edd509ff93771f44db16924bd51235f311f32aaf5fc42",
		"700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c"},
	{"4096 zeros", func() []byte { return make([]byte, 4096) },
		"ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7",
		"babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"},
	{"4097 a", func() []byte { return bytes.Repeat([]byte("a"), 4097) },
		"fbefecdaeada2570cb6d79dc81e17b3b8557d952a26d1a0a075551295f48c89c",
		"18b155c0b6e054f3f7d22488ed15340e74dc161ce2d123e13eb685c3ce565f70"},
	{"1 MiB zeros", func() []byte { return make([]byte, 1<<20) },
		"5d98121f8aeff2a38a3fffee013f85980078507a0ffbd99e5a8d616ecfe7db6a",
		"feb19a23e72cb1b8f935d668a09ecaad0bf7c5b9cdfa6dbba7c88a9998ed2b87"},
	{"1 MiB+1 zeros", func() []byte { return make([]byte, 1<<20+1) },
		"d94d5ba56e85ade504947f41ff2e2553f16db9605eed7553f547367a109c34e7",
		"5ceb20530731a1a1cea6a4badc2fabecc8b9f15481657e1eb8fab82d8b2f2268"},
	// Empty input: all-zero root hash, as the kernel and fsverity-utils.
	{"empty", func() []byte { return nil },
		"0000000000000000000000000000000000000000000000000000000000000000",
		"3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"},
}

func TestSpecVectors(t *testing.T) {
	for _, v := range specVectors {
		t.Run(v.name, func(t *testing.T) {
			data := v.data()
			h := NewHasher(SHA256)
			h.Write(data)
			var root [64]byte
			h.rootHash(&root)
			if got := hex.EncodeToString(root[:32]); got != v.root {
				t.Errorf("root hash = %s, want %s", got, v.root)
			}
			if [32]byte(root[32:]) != [32]byte{} {
				t.Errorf("SHA-256 root hash field not zero-padded: %x", root)
			}
			if got := h.Digest().String(); got != v.digest {
				t.Errorf("Digest = %s, want %s", got, v.digest)
			}
			if got := DigestBytes(data).String(); got != v.digest {
				t.Errorf("DigestBytes = %s, want %s", got, v.digest)
			}
			d, n, err := DigestReader(bytes.NewReader(data))
			if err != nil || n != int64(len(data)) || d.String() != v.digest {
				t.Errorf("DigestReader = %s, %d, %v; want %s, %d", d, n, err, v.digest, len(data))
			}
			if h.Size() != uint64(len(data)) {
				t.Errorf("Size = %d, want %d", h.Size(), len(data))
			}
		})
	}
}

func TestDescriptorLayout(t *testing.T) {
	h := NewHasher(SHA256)
	h.Write([]byte("abc"))
	desc := h.descriptor()
	wantHead, _ := hex.DecodeString("01010c0000000000" + "0300000000000000" +
		"73fbfd76aa2143de160edd509ff93771f44db16924bd51235f311f32aaf5fc42")
	if len(desc) != 256 || !bytes.Equal(desc[:len(wantHead)], wantHead) {
		t.Fatalf("descriptor starts %x, want %x", desc[:len(wantHead)], wantHead)
	}
	if !bytes.Equal(desc[len(wantHead):], make([]byte, 256-len(wantHead))) {
		t.Fatalf("descriptor tail not zero: %x", desc[len(wantHead):])
	}
	h512 := NewHasher(SHA512)
	h512.Write([]byte("abc"))
	desc = h512.descriptor()
	if desc[1] != 2 || bytes.Equal(desc[48:80], make([]byte, 32)) {
		t.Fatalf("SHA-512 descriptor: algorithm byte %d, root hash %x (want 2 and 64 bytes used)", desc[1], desc[16:80])
	}
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func oneShot(alg Algorithm, data []byte) []byte {
	h := NewHasher(alg)
	h.Write(data)
	return h.Sum(nil)
}

func TestChunkedWrites(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// Crosses the 128-hash (SHA-256) and 64-hash (SHA-512) level boundary.
	data := randomBytes(r, 129*BlockSize+123)
	for _, alg := range []Algorithm{SHA256, SHA512} {
		want := oneShot(alg, data)
		if len(want) != alg.Size() {
			t.Fatalf("%v: Sum gave %d bytes, want %d", alg, len(want), alg.Size())
		}
		for _, chunk := range []int{1, 3, 63, 4095, 4096, 4097, 8191, 65536, 100000} {
			h := NewHasher(alg)
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				h.Write(p[:n])
				p = p[n:]
			}
			if got := h.Sum(nil); !bytes.Equal(got, want) {
				t.Errorf("%v chunk %d: %x, want %x", alg, chunk, got, want)
			}
		}
		// Random chunk sizes, including empty writes.
		h := NewHasher(alg)
		for p := data; len(p) > 0; {
			n := min(r.IntN(3*BlockSize), len(p))
			h.Write(p[:n])
			p = p[n:]
		}
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			t.Errorf("%v random chunks: %x, want %x", alg, got, want)
		}
		// ReadFrom with a reader returning one byte at a time.
		h.Reset()
		if n, err := h.ReadFrom(iotest.OneByteReader(bytes.NewReader(data))); err != nil || n != int64(len(data)) {
			t.Fatalf("ReadFrom = %d, %v", n, err)
		}
		if got := h.Sum(nil); !bytes.Equal(got, want) {
			t.Errorf("%v ReadFrom one byte at a time: %x, want %x", alg, got, want)
		}
	}
}

// Sum must not disturb the state: digests of every prefix taken along
// the way equal fresh one-shot digests.
func TestSumIsNonDestructive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	data := randomBytes(r, 130*BlockSize)
	for _, alg := range []Algorithm{SHA256, SHA512} {
		h := NewHasher(alg)
		prev := 0
		for _, cut := range []int{0, 1, 4096, 4097, 128 * 4096, 128*4096 + 5, 129 * 4096, len(data)} {
			h.Write(data[prev:cut])
			prev = cut
			got := h.Sum(nil)
			if again := h.Sum(nil); !bytes.Equal(got, again) {
				t.Fatalf("%v: Sum not repeatable at %d", alg, cut)
			}
			if want := oneShot(alg, data[:cut]); !bytes.Equal(got, want) {
				t.Errorf("%v prefix %d: %x, want %x", alg, cut, got, want)
			}
		}
	}
}

func TestResetReuses(t *testing.T) {
	h := NewHasher(SHA256)
	h.Write(make([]byte, 200*BlockSize+7))
	h.Reset()
	h.Write([]byte("abc"))
	if got, want := h.Digest(), DigestBytes([]byte("abc")); got != want {
		t.Fatalf("after Reset: %s, want %s", got, want)
	}
}

// Aligned writes hash from the caller's buffer and allocate nothing.
func TestAlignedWriteDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 1<<20)
	for _, alg := range []Algorithm{SHA256, SHA512} {
		h := NewHasher(alg)
		h.Write(buf) // grow the tree levels once
		allocs := testing.AllocsPerRun(10, func() {
			h.Reset()
			h.Write(buf)
			h.Write(buf[:100])
			h.Write(buf[:5000])
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per run, want 0", alg, allocs)
		}
	}
}

func TestAlgorithm(t *testing.T) {
	for _, a := range []Algorithm{SHA256, SHA512} {
		p, err := ParseAlgorithm(a.String())
		if err != nil || p != a {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", a.String(), p, err)
		}
	}
	if SHA256.Size() != 32 || SHA512.Size() != 64 || Algorithm(9).Size() != 0 {
		t.Error("Algorithm.Size wrong")
	}
	if _, err := ParseAlgorithm("md5"); err == nil {
		t.Error("ParseAlgorithm(md5) succeeded")
	}
	if s := Algorithm(9).String(); s != "Algorithm(9)" {
		t.Errorf("String = %q", s)
	}
	for name, f := range map[string]func(){
		"NewHasher(9)":        func() { NewHasher(9) },
		"Digest on sha512":    func() { NewHasher(SHA512).Digest() },
		"Digest512 on sha256": func() { NewHasher(SHA256).Digest512() },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestDigestFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := DigestFile(context.Background(), filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, _, err := DigestFile(context.Background(), dir); err == nil {
		t.Error("directory: no error")
	}
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, make([]byte, 3*readBufferSize), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := DigestFile(ctx, p)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), p) {
		t.Errorf("cancelled: %v, want context.Canceled naming %s", err, p)
	}
	wantErr := errors.New("boom")
	if _, _, err := DigestReader(io.MultiReader(bytes.NewReader(make([]byte, 10)), iotest.ErrReader(wantErr))); !errors.Is(err, wantErr) {
		t.Errorf("DigestReader read error: %v", err)
	}
	// A reader's own ErrUnexpectedEOF (say, a truncated tar member) is an
	// error, not the end of the data.
	if _, _, err := DigestReader(iotest.ErrReader(io.ErrUnexpectedEOF)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("DigestReader(ErrUnexpectedEOF): %v", err)
	}
	// Recycled hashers start clean after a failure.
	if got := DigestBytes([]byte("abc")).String(); got != specVectors[0].digest {
		t.Errorf("DigestBytes after failures = %s", got)
	}
}

// FuzzChunkedWrite: go test -run '^$' -fuzz FuzzChunkedWrite -fuzztime 30s -fuzzminimizetime 1s
// (the default minimisation of 60s per new input stalls short runs).
func FuzzChunkedWrite(f *testing.F) {
	f.Add([]byte("abc"), uint16(1))
	f.Add(make([]byte, 4097), uint16(4096))
	f.Add(bytes.Repeat([]byte{0xa5}, 3*BlockSize+1), uint16(4095))
	f.Add(bytes.Repeat([]byte{0x5a, 1, 2}, 6000), uint16(8191)) // eight-leaf runs
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		step := int(chunk)%(2*BlockSize) + 1
		for _, alg := range []Algorithm{SHA256, SHA512} {
			h := NewHasher(alg)
			for p := data; len(p) > 0; {
				n := min(step, len(p))
				h.Write(p[:n])
				p = p[n:]
			}
			got := h.Sum(nil)
			if want := oneShot(alg, data); !bytes.Equal(got, want) {
				t.Fatalf("%v len %d chunk %d: %x, want %x", alg, len(data), step, got, want)
			}
			if want := referenceDigest(data); alg == SHA256 && !bytes.Equal(got, want[:]) {
				t.Fatalf("len %d chunk %d: %x, plain Merkle tree %x", len(data), step, got, want)
			}
		}
	})
}
