// Package builder turns a root filesystem (a directory or a tar stream)
// into a signed cfs commit in a repository: content objects, the stored
// dump, the composefs image, the canonical metadata and its signature, and
// finally the ref.
package builder

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// Source is what a commit is built from: exactly one of Dir and Tar.
type Source struct {
	Dir string    // a root filesystem directory
	Tar io.Reader // a tar stream of a root filesystem
}

// Options configures Build.
type Options struct {
	Ref     string // required: the ref to move, e.g. os/x86_64/stable
	Subject string
	Body    string
	Version string
	// Architecture defaults to the running machine's (uname -m spelling).
	Architecture string
	// RollbackIndex, if set, must not be below the parent's; by default
	// the parent's index is kept (raise it for security fixes that must
	// never be rolled back past).
	RollbackIndex *uint64
	// Metadata is user key/value metadata (--add-metadata).
	Metadata map[string]string
	// Timestamp is the commit time; SOURCE_DATE_EPOCH in the CLI. When
	// set, file mtimes later than it are clamped to it, so the same tree
	// gives the same image wherever and whenever its files were created.
	// Zero means now (and no clamping).
	Timestamp int64
	// Signers sign the commit (at least one).
	Signers []*sign.Signer
	// Threads hashing and copying files; 0 = all CPUs.
	Threads int
	// Cache, if set, remembers file digests by (device, inode, size,
	// mtime, ctime) so that an unchanged tree is not re-read.
	Cache composefs.DigestCache
	// Progress is called while files are scanned.
	Progress func(composefs.BuildProgress)
	// Logger for debug records; nil discards.
	Logger *slog.Logger
	// Now is the clock, for tests.
	Now func() time.Time
}

// Result describes a built commit.
type Result struct {
	Commit         commit.ID       `json:"commit"`
	Parent         *commit.ID      `json:"parent,omitempty"`
	Ref            string          `json:"ref"`
	ImageDigest    fsverity.Digest `json:"image_digest"`
	DumpDigest     fsverity.Digest `json:"dump_digest"`
	Version        string          `json:"version,omitempty"`
	RollbackIndex  uint64          `json:"rollback_index"`
	Files          int64           `json:"files"`
	Objects        int64           `json:"objects"`
	ObjectsSize    int64           `json:"objects_size"`
	ObjectsWritten int64           `json:"objects_written"`
	BytesWritten   int64           `json:"bytes_written"`
	KeyIDs         []string        `json:"key_ids"`
}

// ErrRollbackIndex is returned when a requested rollback index is below
// the parent's.
var ErrRollbackIndex = errors.New("rollback index below the parent's")

// Build builds a commit from src into r and moves opts.Ref to it. Content
// objects, the dump and the image are written first (concurrent builds may
// do this in parallel); then, under the ref's lock, the parent is read, the
// metadata written and signed, and the ref moved. A failure at any point
// leaves the ref where it was.
func Build(ctx context.Context, r *repo.Repo, src Source, opts Options) (*Result, error) {
	if err := repo.ValidRefName(opts.Ref); err != nil {
		return nil, err
	}
	if len(opts.Signers) == 0 {
		return nil, errors.New("build: at least one signing key is required")
	}
	if (src.Dir == "") == (src.Tar == nil) {
		return nil, errors.New("build: give exactly one of a directory and a tar stream")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	// Builds hold the GC lock shared so prune never sweeps objects this
	// build relies on.
	gc, err := r.GCLock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer gc.Unlock()

	before := r.Objects.Stats()
	start := time.Now()
	// Every object of the commit goes into one batch: one filesystem
	// sync makes them durable before any is published, and existence
	// checks come from listings of the store.
	batch := r.Objects.Batch()
	defer batch.Abort() // after Flush: nothing left to drop
	fc, _ := opts.Cache.(*FileCache)
	if fc != nil {
		batch.ExpectLookups(fc.count()) // about as many files as last time
		if err := fc.useStore(ctx, r.Objects); err != nil {
			// Only a shortcut: without it every object is looked for.
			log.Debug("build cache: fan-out directories not stamped", "err", err)
		}
	}
	root, err := buildTree(ctx, r, batch, src, opts)
	if err != nil {
		return nil, err
	}
	if opts.Timestamp != 0 {
		clampMtimes(root, composefs.Timespec{Sec: opts.Timestamp})
	}
	treeDone := time.Now()

	// The checks of the tree run beside the writing of the dump (both
	// only read the tree); nothing is published unless they pass.
	var (
		stats    objectStats
		kernel   *commit.Kernel
		checkErr error
	)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		if checkErr = root.Validate(); checkErr == nil {
			stats = countObjects(root)
			kernel, checkErr = findKernel(root)
		}
	}()
	dumpDigest, dumpSize, img, err := storeDumpAndImage(ctx, r, batch, root, opts.Cache, func() error {
		<-checked
		return checkErr
	})
	<-checked
	if checkErr != nil {
		return nil, checkErr // the tree's own problem first
	}
	if err != nil {
		return nil, err
	}
	flushDone := time.Now()
	log.Debug("tree stored", "objects", stats.Count, "image", img.Digest, "dump", dumpDigest,
		"tree_time", treeDone.Sub(start), "store_time", flushDone.Sub(treeDone))
	if fc != nil {
		// Every object of the commit is in the store now: the cache
		// takes the stamps that vouch for them next time, beside the
		// writing of the commit.
		sealed := make(chan struct{})
		defer func() { <-sealed }()
		go func() {
			defer close(sealed)
			t := time.Now()
			if err := fc.seal(ctx, r.Objects); err != nil {
				log.Debug("build cache not sealed: the next build looks for its objects", "err", err)
				return
			}
			log.Debug("build cache sealed", "vouched", fc.Vouched(), "time", time.Since(t))
		}()
	}

	// From here on: one writer per ref.
	lock, err := r.LockRef(ctx, opts.Ref)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	var parent *commit.ID
	var parentIndex uint64
	if id, err := r.ReadRef(opts.Ref); err == nil {
		pm, _, err := r.ReadCommit(id)
		if err != nil {
			return nil, fmt.Errorf("parent of %s: %w", opts.Ref, err)
		}
		parent, parentIndex = &id, pm.RollbackIndex
	} else if !errors.Is(err, repo.ErrRefNotFound) {
		return nil, err
	}
	index := parentIndex
	if opts.RollbackIndex != nil {
		if *opts.RollbackIndex < parentIndex {
			return nil, fmt.Errorf("%w: asked for %d, parent %s has %d", ErrRollbackIndex, *opts.RollbackIndex, parent, parentIndex)
		}
		index = *opts.RollbackIndex
	}
	ts := opts.Timestamp
	if ts == 0 {
		ts = now().Unix()
	}
	arch := opts.Architecture
	if arch == "" {
		arch = MachineArch()
	}
	md := &commit.Metadata{
		Schema:        commit.SchemaV1,
		Architecture:  arch,
		Body:          opts.Body,
		Dump:          commit.Dump{Digest: dumpDigest, Size: dumpSize},
		Image:         img,
		Kernel:        kernel,
		Metadata:      opts.Metadata,
		Objects:       commit.Objects{Count: stats.Count, Size: stats.Size},
		Parent:        parent,
		Ref:           opts.Ref,
		RollbackIndex: index,
		Subject:       opts.Subject,
		Timestamp:     ts,
		Version:       opts.Version,
	}
	canonical, err := md.Canonical()
	if err != nil {
		return nil, err
	}
	env, err := sign.Sign(ctx, commit.PayloadType, canonical, opts.Signers...)
	if err != nil {
		return nil, fmt.Errorf("sign commit: %w", err)
	}
	envBytes, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	id, err := r.WriteCommit(canonical, envBytes)
	if err != nil {
		return nil, err
	}
	if err := r.WriteRef(opts.Ref, id); err != nil {
		return nil, err
	}
	if err := r.UpdateSummary(ctx, opts.Signers); err != nil {
		return nil, fmt.Errorf("commit %s written and %s moved, but the summary was not updated: %w", id, opts.Ref, err)
	}
	log.Debug("commit written", "commit", id, "commit_time", time.Since(flushDone), "total_time", time.Since(start))
	after := r.Objects.Stats()
	res := &Result{
		Commit:         id,
		Parent:         parent,
		Ref:            opts.Ref,
		ImageDigest:    img.Digest,
		DumpDigest:     dumpDigest,
		Version:        opts.Version,
		RollbackIndex:  index,
		Files:          stats.Files,
		Objects:        stats.Count,
		ObjectsSize:    stats.Size,
		ObjectsWritten: after.Written - before.Written,
		BytesWritten:   after.BytesWritten - before.BytesWritten,
	}
	for _, s := range opts.Signers {
		res.KeyIDs = append(res.KeyIDs, s.KeyID().String())
	}
	return res, nil
}

func buildTree(ctx context.Context, r *repo.Repo, batch *objstore.Batch, src Source, opts Options) (*composefs.Node, error) {
	if src.Dir != "" {
		return composefs.BuildFromDir(ctx, src.Dir, composefs.BuildOptions{
			Batch:    batch,
			Threads:  opts.Threads,
			Cache:    opts.Cache,
			Progress: opts.Progress,
			Logger:   opts.Logger,
		})
	}
	return composefs.BuildFromTar(ctx, src.Tar, composefs.TarOptions{
		Store:    r.Objects,
		Progress: opts.Progress,
		Logger:   opts.Logger,
	})
}

// clampMtimes sets every mtime later than max to max (the reproducible
// builds convention for SOURCE_DATE_EPOCH).
func clampMtimes(root *composefs.Node, max composefs.Timespec) {
	eachNode(root, func(n *composefs.Node) {
		if n.Link == nil && max.Less(n.Mtime) {
			n.Mtime = max
		}
	})
}

// eachNode calls fn for every node of the tree, depth first (Walk without
// building the paths).
func eachNode(n *composefs.Node, fn func(*composefs.Node)) {
	fn(n)
	if n.IsDir() {
		for _, c := range n.Children {
			eachNode(c, fn)
		}
	}
}

type objectStats struct {
	Files, Count, Size int64
}

// countObjects counts regular files and the distinct external objects the
// tree references, with their total size.
func countObjects(root *composefs.Node) objectStats {
	var st objectStats
	external := 0
	eachNode(root, func(n *composefs.Node) {
		if n.Link == nil && n.HasExternalData() {
			external++
		}
	})
	seen := make(map[fsverity.Digest]struct{}, external)
	var byPath map[string]struct{} // objects named without a digest
	eachNode(root, func(n *composefs.Node) {
		if n.Link != nil || !n.IsRegular() {
			return
		}
		st.Files++
		if !n.HasExternalData() || n.Payload == "" {
			return
		}
		if n.Digest != nil {
			if _, dup := seen[*n.Digest]; dup {
				return
			}
			seen[*n.Digest] = struct{}{}
		} else {
			if byPath == nil {
				byPath = map[string]struct{}{}
			}
			if _, dup := byPath[n.Payload]; dup {
				return
			}
			byPath[n.Payload] = struct{}{}
		}
		st.Count++
		st.Size += int64(n.Size)
	})
	return st
}

// ErrKernel reports a problem with the boot files in the tree.
var ErrKernel = errors.New("kernel in tree")

// findKernel looks for /usr/lib/modules/<kver>/vmlinuz (and
// initramfs.img beside it). No kernel is fine (an application tree);
// several are refused, since the commit could not say which boots.
func findKernel(root *composefs.Node) (*commit.Kernel, error) {
	modules := lookupPath(root, "/usr/lib/modules")
	if modules == nil || !modules.IsDir() {
		return nil, nil
	}
	var found []*commit.Kernel
	for _, kdir := range modules.Children {
		if !kdir.IsDir() {
			continue
		}
		vmlinuz := kdir.Lookup("vmlinuz")
		if vmlinuz == nil {
			continue
		}
		base := "/usr/lib/modules/" + kdir.Name
		ref, err := fileRef(base+"/vmlinuz", vmlinuz)
		if err != nil {
			return nil, err
		}
		k := &commit.Kernel{Version: kdir.Name, Vmlinuz: ref}
		if initrd := kdir.Lookup("initramfs.img"); initrd != nil {
			ref, err := fileRef(base+"/initramfs.img", initrd)
			if err != nil {
				return nil, err
			}
			k.Initramfs = &ref
		}
		found = append(found, k)
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	var names []string
	for _, k := range found {
		names = append(names, k.Version)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("%w: several kernels under /usr/lib/modules (%s); a commit boots exactly one", ErrKernel, strings.Join(names, ", "))
}

func fileRef(p string, n *composefs.Node) (commit.FileRef, error) {
	n = n.Target()
	if !n.IsRegular() || n.Size == 0 {
		return commit.FileRef{}, fmt.Errorf("%w: %s is not a non-empty regular file", ErrKernel, p)
	}
	ref := commit.FileRef{Path: p, Size: int64(n.Size)}
	switch {
	case n.Content != nil:
		ref.Digest = fsverity.DigestBytes(n.Content)
	case n.Digest != nil:
		ref.Digest = *n.Digest
	default:
		return commit.FileRef{}, fmt.Errorf("%w: %s has no digest", ErrKernel, p)
	}
	return ref, nil
}

func lookupPath(root *composefs.Node, p string) *composefs.Node {
	n := root
	for _, part := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if n == nil || !n.IsDir() {
			return nil
		}
		n = n.Lookup(part)
	}
	return n
}

// storeDumpAndImage stores the tree's dump and its composefs image and,
// if check then passes, publishes every object of the batch. The image is
// a function of the dump (and of the writer): when the file cache
// remembers the image this executable wrote for the same dump, and it is
// in the store, it is not written again.
func storeDumpAndImage(ctx context.Context, r *repo.Repo, batch *objstore.Batch, root *composefs.Node, cache composefs.DigestCache, check func() error) (fsverity.Digest, int64, commit.Image, error) {
	var (
		dumpDigest, imgDigest fsverity.Digest
		dumpSize, imgSize     int64
		img                   commit.Image
		known                 bool
	)
	memo, _ := cache.(*FileCache)
	if memo != nil && memo.rememberedImages() {
		// The dump first: it tells whether the image is needed.
		var err error
		if dumpDigest, dumpSize, err = storeDump(ctx, batch, root, true); err != nil {
			return dumpDigest, dumpSize, img, err
		}
		if img, known = memo.image(dumpDigest); known {
			if known, err = batch.Has(ctx, img.Digest); err != nil {
				return dumpDigest, dumpSize, img, err
			}
		}
		if !known {
			if imgDigest, imgSize, err = storeImage(ctx, batch, root); err != nil {
				return dumpDigest, dumpSize, img, err
			}
		}
	} else {
		// Independent: write them at once.
		var wg sync.WaitGroup
		var dumpErr, imgErr error
		wg.Go(func() { dumpDigest, dumpSize, dumpErr = storeDump(ctx, batch, root, false) })
		wg.Go(func() { imgDigest, imgSize, imgErr = storeImage(ctx, batch, root) })
		wg.Wait()
		if err := errors.Join(dumpErr, imgErr); err != nil {
			return dumpDigest, dumpSize, img, err
		}
	}
	if err := check(); err != nil {
		return dumpDigest, dumpSize, img, err
	}
	if err := batch.Flush(ctx); err != nil {
		return dumpDigest, dumpSize, img, fmt.Errorf("store objects: %w", err)
	}
	if !known {
		var err error
		if img, err = imageInfo(r, imgDigest, imgSize); err != nil {
			return dumpDigest, dumpSize, img, err
		}
	}
	if memo != nil {
		memo.setImage(dumpDigest, img)
	}
	return dumpDigest, dumpSize, img, nil
}

// storeDump queues the tree's dump as an object of the batch. With probe
// (a rebuild with a cache, where the dump is likely stored already) the
// dump is hashed first, without storing it: when the store has it,
// nothing is written (as Batch.Insert, the store is trusted for content);
// otherwise it is formatted a second time into the store and must hash
// the same.
func storeDump(ctx context.Context, batch *objstore.Batch, root *composefs.Node, probe bool) (fsverity.Digest, int64, error) {
	if !probe {
		return insertDump(ctx, batch, root)
	}
	h := fsverity.NewHasher(fsverity.SHA256)
	w := bufio.NewWriterSize(h, 32*fsverity.BlockSize) // whole leaves per write
	if err := dump.Write(w, root); err != nil {
		return fsverity.Digest{}, 0, fmt.Errorf("store dump: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fsverity.Digest{}, 0, fmt.Errorf("store dump: %w", err)
	}
	want, size := h.Digest(), int64(h.Size())
	if has, err := batch.Has(ctx, want); err != nil || has {
		return want, size, err
	}
	d, n, err := insertDump(ctx, batch, root)
	if err == nil && (d != want || n != size) {
		err = fmt.Errorf("store dump: written as %s (%d bytes), hashed as %s (%d bytes)", d, n, want, size)
	}
	return d, n, err
}

// insertDump formats the tree's dump straight into the batch.
func insertDump(ctx context.Context, batch *objstore.Batch, root *composefs.Node) (fsverity.Digest, int64, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(dump.Write(pw, root)) }()
	d, n, err := batch.Insert(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return d, n, fmt.Errorf("store dump: %w", err)
	}
	return d, n, nil
}

// storeImage queues the composefs image as an object of the batch, named
// by its fs-verity digest, and checks the writer's digest against the
// store's.
func storeImage(ctx context.Context, batch *objstore.Batch, root *composefs.Node) (fsverity.Digest, int64, error) {
	pr, pw := io.Pipe()
	var wd fsverity.Digest
	go func() {
		var err error
		wd, err = erofs.Write(pw, root, erofs.DefaultWriteOptions())
		pw.CloseWithError(err)
	}()
	d, n, err := batch.Insert(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return d, n, fmt.Errorf("store image: %w", err)
	}
	if d != wd {
		return d, n, fmt.Errorf("store image: writer digest %s differs from stored digest %s", wd, d)
	}
	return d, n, nil
}

// imageInfo reads the header of the stored image d.
func imageInfo(r *repo.Repo, d fsverity.Digest, size int64) (commit.Image, error) {
	f, err := r.Objects.Open(d)
	if err != nil {
		return commit.Image{}, err
	}
	defer f.Close()
	im, err := erofs.Open(f, size)
	if err != nil {
		return commit.Image{}, fmt.Errorf("store image: reading back %s: %w", d, err)
	}
	return commit.Image{Algorithm: "sha256", Digest: d, FormatVersion: int(im.Header.ComposefsVersion), Size: size}, nil
}

// MachineArch returns the running architecture in uname -m spelling.
func MachineArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return runtime.GOARCH
}
