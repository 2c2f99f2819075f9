// Package pull copies signed commits between cfs repositories: the
// commit's metadata and signature, its dump, its composefs image and every
// content object its tree references, verified on the way. Today the source
// is a local repository path; remote sources come later behind the same
// Pull call.
//
// Order of work, so that a refusal or a crash never leaves a ref pointing
// at anything incomplete or unverified:
//
//  1. The source ref's commit is read and its signature verified against
//     the caller's trust store before anything is copied.
//  2. Under the destination's GC lock (shared, so a concurrent prune never
//     sweeps objects we are adding), the dump is copied and parsed (its
//     digest checked), then every referenced content object is copied in
//     parallel, each one hashed and compared with its name.
//  3. The composefs image is regenerated from the dump and stored; its
//     digest must be the signed one (the source's image file is never
//     used).
//  4. The metadata and signature are stored, and the ref is written last.
//
// Objects already in the destination are not read again: the destination
// verified them when they were added, and cfs-deploy verifies every object
// a new deployment needs that the current deployment does not already use
// (see docs/deployments.md).
//
// The package also holds the verification helpers that deploy shares:
// VerifyCommit, ReadTree, TreeObjects and VerifyObjects.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// Options configures Pull.
type Options struct {
	// Trust is the trust store the commit's signature must satisfy
	// (required).
	Trust *sign.TrustStore
	// Workers copying objects in parallel; 0 means GOMAXPROCS.
	Workers int
	// Logger for debug records; nil discards.
	Logger *slog.Logger
}

// Result describes a pull.
type Result struct {
	Ref     string    `json:"ref"`
	Commit  commit.ID `json:"commit"`
	Version string    `json:"version,omitempty"`
	// Objects is how many content objects the commit's tree references.
	Objects int `json:"objects"`
	// Fetched and FetchedBytes count the objects copied (content, dump
	// and image objects the destination did not have).
	Fetched      int64 `json:"fetched"`
	FetchedBytes int64 `json:"fetched-bytes"`
	// KeyIDs are the trusted keys whose signatures verified.
	KeyIDs []string `json:"key-ids"`
}

// ErrUnsupportedSource means the source is not a local repository path.
var ErrUnsupportedSource = errors.New("unsupported pull source (only local repository paths for now)")

// Pull copies ref's commit from the repository at source into dst and
// points dst's ref at it (see the package documentation).
func Pull(ctx context.Context, dst *repo.Repo, source, ref string, opts Options) (*Result, error) {
	if strings.Contains(source, "://") {
		return nil, fmt.Errorf("%s: %w", source, ErrUnsupportedSource)
	}
	if err := repo.ValidRefName(ref); err != nil {
		return nil, err
	}
	if opts.Trust == nil {
		return nil, errors.New("pull: a trust store is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src, err := repo.Open(source)
	if err != nil {
		return nil, err
	}
	id, err := src.ReadRef(ref)
	if err != nil {
		return nil, err
	}
	m, canonical, err := src.ReadCommit(id)
	if err != nil {
		if errors.Is(err, repo.ErrCorruptCommit) {
			return nil, &VerificationError{What: "commit " + id.String(), Err: err}
		}
		return nil, err
	}
	envelope, err := src.ReadSignature(id)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	res, err := VerifyCommit(canonical, envelope, opts.Trust)
	if err != nil {
		return nil, err
	}
	out := &Result{Ref: ref, Commit: id, Version: m.Version}
	for _, k := range res.KeyIDs {
		out.KeyIDs = append(out.KeyIDs, k.String())
	}

	gc, err := dst.GCLock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer gc.Unlock()

	var fetched, fetchedBytes atomic.Int64
	count := func(n int64, ok bool) {
		if ok {
			fetched.Add(1)
			fetchedBytes.Add(n)
		}
	}
	n, ok, err := copyObject(ctx, src.Objects, dst.Objects, m.Dump.Digest)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	count(n, ok)
	tree, err := ReadTree(ctx, dst.Objects, m.Dump)
	if err != nil {
		return nil, err
	}
	objs, err := TreeObjects(tree)
	if err != nil {
		return nil, err
	}
	out.Objects = len(objs)
	digests := make([]fsverity.Digest, 0, len(objs))
	for d := range objs {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(a, b fsverity.Digest) int { return strings.Compare(string(a[:]), string(b[:])) })
	err = ForEach(ctx, opts.Workers, len(digests), func(ctx context.Context, i int) error {
		n, ok, err := copyObject(ctx, src.Objects, dst.Objects, digests[i])
		if err != nil {
			return err
		}
		if ok && n != objs[digests[i]] {
			return &VerificationError{What: "object " + digests[i].String(),
				Err: fmt.Errorf("%d bytes, the tree says %d", n, objs[digests[i]])}
		}
		count(n, ok)
		return nil
	})
	if err != nil {
		return nil, err
	}
	log.Debug("objects copied", "objects", len(objs), "fetched", fetched.Load())

	n, ok, err = storeImage(ctx, dst.Objects, tree, m.Image.Digest)
	if err != nil {
		return nil, err
	}
	count(n, ok)

	if _, err := dst.WriteCommit(canonical, envelope); err != nil {
		return nil, err
	}
	lock, err := dst.LockRef(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if err := dst.WriteRef(ref, id); err != nil {
		return nil, err
	}
	out.Fetched, out.FetchedBytes = fetched.Load(), fetchedBytes.Load()
	return out, nil
}

// copyObject copies object d from src into dst unless dst has it. The
// source is hashed first (a mismatch is refused before anything is
// written); the copy itself may be a reflink or copy_file_range, so a new
// object is verified once more in dst, where a source changed meanwhile
// would show. It returns the size and whether it copied.
func copyObject(ctx context.Context, src, dst *objstore.Store, d fsverity.Digest) (int64, bool, error) {
	if ok, err := dst.Has(ctx, d); err != nil || ok {
		return 0, false, err
	}
	f, err := src.Open(d)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, fmt.Errorf("object %s in the source: %w", d, ErrMissingObject)
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	got, size, err := digestFile(ctx, f)
	if err != nil {
		return 0, false, fmt.Errorf("read source object %s: %w", d, err)
	}
	if got != d {
		return 0, false, Mismatch("source object "+d.String(), d, got)
	}
	written, err := dst.InsertFile(ctx, f, size, d)
	if err != nil {
		if errors.Is(err, objstore.ErrDigestMismatch) || errors.Is(err, objstore.ErrCorrupt) {
			return 0, false, &VerificationError{What: "object " + d.String(), Err: err}
		}
		return 0, false, err
	}
	if written {
		if err := dst.Verify(ctx, d); err != nil {
			if rmErr := dst.Remove(d); rmErr != nil {
				err = errors.Join(err, rmErr)
			}
			return 0, false, &VerificationError{What: "object " + d.String() + " (changed while copied)", Err: err}
		}
	}
	return size, written, nil
}

func digestFile(ctx context.Context, f *os.File) (fsverity.Digest, int64, error) {
	if err := ctx.Err(); err != nil {
		return fsverity.Digest{}, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return fsverity.Digest{}, 0, err
	}
	if !st.Mode().IsRegular() {
		return fsverity.Digest{}, 0, fmt.Errorf("%s: not a regular file", f.Name())
	}
	d, n, err := fsverity.DigestReader(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return d, n, err
	}
	return d, n, nil
}

// storeImage regenerates the composefs image of root into store unless
// it is there, after checking the regenerated digest against the signed
// one (a first pass into io.Discard, so that nothing is stored when they
// differ). It returns the size and whether it stored a new object.
func storeImage(ctx context.Context, store *objstore.Store, root *composefs.Node, want fsverity.Digest) (int64, bool, error) {
	got, err := erofs.Write(io.Discard, root, erofs.DefaultWriteOptions())
	if err != nil {
		return 0, false, fmt.Errorf("regenerate image: %w", err)
	}
	if got != want {
		return 0, false, Mismatch("regenerated composefs image", want, got)
	}
	if ok, err := store.Has(ctx, want); err != nil || ok {
		return 0, false, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := erofs.Write(pw, root, erofs.DefaultWriteOptions())
		pw.CloseWithError(err)
	}()
	d, n, err := store.Insert(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return 0, false, fmt.Errorf("store image: %w", err)
	}
	if d != want {
		return 0, false, Mismatch("stored composefs image", want, d)
	}
	return n, true, nil
}
