package sign

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// A FIFO named *.pub in the trust directory is an error, not a hang.
func TestLoadTrustStoreFIFO(t *testing.T) {
	dir := t.TempDir()
	writePubs(t, dir, newSigner(t, "ed25519"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.pub"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTrustStore(dir, TrustOptions{}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("LoadTrustStore with a FIFO: %v, want ErrInvalidKey", err)
	}
}
