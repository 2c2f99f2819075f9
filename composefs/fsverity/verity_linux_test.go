package fsverity

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// On a Linux machine with fs-verity the kernel path is tested for real;
// elsewhere (this VM: ext4 without verity, EOPNOTSUPP) every kernel call
// must report ErrNotSupported.
func TestKernelVerity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "obj")
	data := randomBytes(rand.New(rand.NewPCG(5, 6)), 3*BlockSize+10)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := DigestBytes(data)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	probe := Supported(dir)
	if probe == nil {
		t.Logf("fs-verity is supported in %s: testing enable and measure", dir)
		if _, err := Measure(f); !errors.Is(err, ErrNotEnabled) {
			t.Fatalf("Measure before Enable: %v, want ErrNotEnabled", err)
		}
		if err := Enable(f, SHA256); err != nil {
			t.Fatal(err)
		}
		if err := Enable(f, SHA256); !errors.Is(err, ErrAlreadyEnabled) {
			t.Errorf("second Enable: %v, want ErrAlreadyEnabled", err)
		}
		got, err := Measure(f)
		if err != nil || got != want {
			t.Fatalf("Measure = %s, %v; want %s", got, err, want)
		}
		if _, err := Measure512(f); !errors.Is(err, ErrAlgorithmMismatch) {
			t.Errorf("Measure512 of a SHA-256 file: %v, want ErrAlgorithmMismatch", err)
		}
		d, kernel, err := MeasureOrCompute(context.Background(), f)
		if err != nil || !kernel || d != want {
			t.Errorf("MeasureOrCompute = %s, %v, %v; want %s from the kernel", d, kernel, err, want)
		}
		return
	}

	if !errors.Is(probe, ErrNotSupported) {
		t.Fatalf("Supported(%s) = %v, want nil or ErrNotSupported", dir, probe)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".fsverity-probe-*")); len(left) != 0 {
		t.Errorf("probe left files behind: %v", left)
	}
	for name, err := range map[string]error{
		"Enable sha256": Enable(f, SHA256),
		"Enable sha512": Enable(f, SHA512),
		"Measure":       func() error { _, err := Measure(f); return err }(),
		"Measure512":    func() error { _, err := Measure512(f); return err }(),
	} {
		if !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", name, err)
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
		if errno := unix.Errno(0); !errors.As(err, &errno) {
			t.Errorf("%s: error %q does not wrap the errno", name, err)
		}
	}

	// User-space fallback: same digest, file offset untouched.
	if _, err := f.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	d, kernel, err := MeasureOrCompute(context.Background(), f)
	if err != nil || kernel || d != want {
		t.Fatalf("MeasureOrCompute = %s, kernel %v, %v; want %s computed", d, kernel, err, want)
	}
	if off, _ := f.Seek(0, io.SeekCurrent); off != 5 {
		t.Errorf("MeasureOrCompute moved the file offset to %d", off)
	}
}

func TestMeasureOrComputeClosedFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, _, err := MeasureOrCompute(context.Background(), f); err == nil || errors.Is(err, ErrNotSupported) {
		t.Fatalf("closed file: %v, want a plain error", err)
	}
}
