package pull

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// ErrVerification classifies every security refusal of pull and deploy:
// a signature that does not verify against the trust store, a dump, image,
// object or boot file whose digest is not the signed one. Such errors are
// *VerificationError.
var ErrVerification = errors.New("verification failed")

// ErrMissingObject means an object a commit needs is not in the
// repository.
var ErrMissingObject = errors.New("object missing from the repository")

// VerificationError is a security refusal: What names the thing that
// failed (the commit signature, the image, an object, a boot file), Err
// the detail (a *sign.VerificationError, a *DigestMismatchError, a
// *objstore.CorruptObjectError, …). errors.Is matches ErrVerification and
// everything Err matches.
type VerificationError struct {
	What string
	Err  error
}

func (e *VerificationError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrVerification, e.What, e.Err)
}

// Unwrap returns ErrVerification and the detail.
func (e *VerificationError) Unwrap() []error { return []error{ErrVerification, e.Err} }

// DigestMismatchError reports content whose fs-verity digest is not the
// signed one.
type DigestMismatchError struct {
	What     string
	Expected fsverity.Digest
	Found    fsverity.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("fs-verity digest %s, the signed digest is %s", e.Found, e.Expected)
}

// Mismatch returns a *VerificationError wrapping a *DigestMismatchError.
func Mismatch(what string, expected, found fsverity.Digest) error {
	return &VerificationError{What: what, Err: &DigestMismatchError{What: what, Expected: expected, Found: found}}
}

// VerifyCommit checks a commit's signature envelope against trust (fail
// closed: a missing, malformed, untrusted, revoked or insufficient
// signature is a *VerificationError) and that the signed payload is
// exactly the canonical metadata.
func VerifyCommit(canonical, envelope []byte, trust *sign.TrustStore) (*sign.VerifyResult, error) {
	id := commit.IDOf(canonical)
	what := "signature of commit " + id.String()
	if trust == nil {
		return nil, &VerificationError{What: what, Err: errors.New("no trust store")}
	}
	if len(envelope) == 0 {
		return nil, &VerificationError{What: what, Err: sign.ErrNoSignature}
	}
	env, err := sign.ParseEnvelope(envelope)
	if err != nil {
		return nil, &VerificationError{What: what, Err: err}
	}
	payload, res, err := sign.Verify(env, commit.PayloadType, trust)
	if err != nil {
		return nil, &VerificationError{What: what, Err: err}
	}
	if !bytes.Equal(payload, canonical) {
		return nil, &VerificationError{What: what, Err: errors.New("the signed payload is not this commit's metadata")}
	}
	return res, nil
}

// ReadTree parses the commit's stored dump from store, hashing it on the
// way: a dump whose fs-verity digest or size is not the signed one is a
// *VerificationError even if it parses.
func ReadTree(ctx context.Context, store *objstore.Store, d commit.Dump) (*composefs.Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := store.Open(d.Digest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dump %s: %w", d.Digest, ErrMissingObject)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := fsverity.NewHasher(fsverity.SHA256)
	cr := &countingReader{r: bufio.NewReaderSize(f, 1<<16)}
	tee := io.TeeReader(cr, h)
	root, perr := dump.Parse(tee, dump.ParseOptions{})
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, fmt.Errorf("read dump %s: %w", d.Digest, err)
	}
	if got := h.Digest(); got != d.Digest {
		return nil, Mismatch("dump object "+d.Digest.String(), d.Digest, got)
	}
	if cr.n != d.Size {
		return nil, &VerificationError{What: "dump object " + d.Digest.String(),
			Err: fmt.Errorf("%d bytes, the commit says %d", cr.n, d.Size)}
	}
	if perr != nil {
		return nil, fmt.Errorf("dump %s: %w", d.Digest, perr)
	}
	return root, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TreeObjects returns the objects a tree's image references (regular
// files with external data), with their sizes. Every payload must be an
// object path ("ab/cdef…") agreeing with the file's digest, and one
// object must have one size; anything else is a tree cfs never builds and
// a composefs.ErrInvalid error.
func TreeObjects(root *composefs.Node) (map[fsverity.Digest]int64, error) {
	objs := map[fsverity.Digest]int64{}
	err := root.Walk(func(p string, n *composefs.Node) error {
		if !n.HasExternalData() {
			return nil
		}
		d, err := fsverity.ParseObjectPath(n.Payload)
		if err != nil {
			return &composefs.InvalidError{Path: p, Reason: "payload is not an object path: " + err.Error()}
		}
		if n.Digest != nil && *n.Digest != d {
			return &composefs.InvalidError{Path: p, Reason: fmt.Sprintf("payload names object %s but the file's digest is %s", d, n.Digest)}
		}
		if size, ok := objs[d]; ok && size != int64(n.Size) {
			return &composefs.InvalidError{Path: p, Reason: fmt.Sprintf("object %s has sizes %d and %d", d, size, n.Size)}
		}
		objs[d] = int64(n.Size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return objs, nil
}

// VerifyObjects checks, on workers goroutines (0 = GOMAXPROCS), that
// every object in digests is in store with the right content (the
// kernel's fs-verity measurement when the object has fs-verity, else its
// content re-hashed). The first failure is returned: a missing object
// matches ErrMissingObject, a corrupt one is a *VerificationError.
func VerifyObjects(ctx context.Context, store *objstore.Store, digests []fsverity.Digest, workers int) error {
	return ForEach(ctx, workers, len(digests), func(ctx context.Context, i int) error {
		d := digests[i]
		err := store.Verify(ctx, d)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("object %s: %w", d, ErrMissingObject)
		case errors.Is(err, objstore.ErrCorrupt):
			return &VerificationError{What: "object " + d.String(), Err: err}
		}
		return err
	})
}

// ForEach calls fn(ctx, i) for i in [0, n) on workers goroutines (0 =
// GOMAXPROCS) and returns the first error; after an error the remaining
// calls are skipped and ctx passed to running ones is cancelled.
func ForEach(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, n)
	if workers == 0 {
		return ctx.Err()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		once  sync.Once
		first error
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= n || ctx.Err() != nil {
			return 0, false
		}
		i := next
		next++
		return i, true
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
