// Package progress draws a one-line progress indicator on a terminal. It
// does nothing when the output is not a terminal, so command output stays
// deterministic in pipes, files and CI logs.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Bar is a rate-limited single-line progress display. The zero value and a
// nil *Bar are disabled and safe to use.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	label   string
	last    time.Time
	printed bool
}

// New returns a Bar writing to f if f is a terminal, else a disabled Bar.
func New(f *os.File, label string) *Bar {
	if f == nil || !IsTerminal(f) {
		return nil
	}
	return &Bar{w: f, label: label}
}

// Update shows the count of items and bytes done, at most ten times a second.
func (b *Bar) Update(items, bytes int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	fmt.Fprintf(b.w, "\r\033[K%s: %d files, %s", b.label, items, HumanBytes(bytes))
	b.printed = true
}

// Done clears the line.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.printed {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

// HumanBytes formats a byte count with binary units.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
