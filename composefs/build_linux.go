package composefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// BuildFromDir reads the directory tree at dir into a composefs tree as
// `mkcomposefs` does (spec §2): entries are lstat'ed (symlinks are never
// followed), every non-directory gets nlink 1 (hardlinks in the source are
// not detected), xattrs of all namespaces are read (see the options),
// regular files of 1..64 bytes become inline Content, larger ones get their
// fs-verity Digest and Payload = Digest.ObjectPath(), and with a Store
// their content is copied into it.
//
// The walk, lstat and xattr reading run on a pool of goroutines, and the
// files are hashed (and stored) beside it on opts.Threads workers with
// reused buffers; file content is streamed, never held. The result does
// not depend on the order of readdir or of completion: children are
// sorted, xattrs sorted by name. Errors name the path they concern and
// wrap the underlying error (e.g. *fs.PathError, *InvalidError,
// ErrSourceChanged, *objstore.CorruptObjectError).
func BuildFromDir(ctx context.Context, dir string, opts BuildOptions) (*Node, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("build from %s: %w", dir, err)
	}
	b := newBuilder(ctx, root, opts)
	defer b.cancel()
	return b.run()
}

// batchSize is how many entries of one directory a walk task lstats.
const batchSize = 128

// statKey identifies a file's state: changes to it while the tree is built
// are detected by comparing keys.
type statKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func keyOf(st *unix.Stat_t) statKey {
	return statKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// isSparse reports whether a file has fewer blocks allocated than its size
// needs, i.e. may have holes worth skipping instead of reading.
func isSparse(st *unix.Stat_t) bool { return st.Blocks*512 < st.Size }

// walkTask reads a directory (dir == nil) or lstats entries lo..hi of one.
type walkTask struct {
	node   *Node
	rel    string
	dir    *dirState
	lo, hi int
}

// fileTask hashes (and stores) one regular file.
type fileTask struct {
	node   *Node
	rel    string
	key    statKey
	sparse bool
}

// dirState collects the children of a directory read by several tasks.
type dirState struct {
	node  *Node
	rel   string
	names []string
	kids  []*Node // by readdir index; nil for skipped entries
	left  atomic.Int32
}

type builder struct {
	opts BuildOptions
	// entryCache is opts.Cache as an EntryCache when it is one and all
	// xattrs are read.
	entryCache EntryCache
	// racyBefore: files whose ctime is not before it are not cached.
	racyBefore unix.Timespec
	root       string // absolute
	prefix     string // root with a trailing slash
	log        *slog.Logger
	ctx        context.Context
	cancel     context.CancelFunc

	walkQ       *workQueue[walkTask]
	fileQ       *workQueue[fileTask]
	walkPending atomic.Int64

	errOnce sync.Once
	err     error

	// inserted holds the objects handled in this build (a plain map: a
	// sync.Map costs about three times the memory per entry).
	insertedMu sync.Mutex
	inserted   map[fsverity.Digest]struct{}
	// batch queues the objects copied into the store; they are made
	// durable and published together when the build succeeds (by the
	// caller if it gave opts.Batch).
	batch    *objstore.Batch
	ownBatch bool

	files, bytes, entries     atomic.Int64
	totalFiles, totalBytes    atomic.Int64
	dirs, objects, objWritten atomic.Int64
	walkDone                  atomic.Bool
}

func newBuilder(ctx context.Context, root string, opts BuildOptions) *builder {
	ctx, cancel := context.WithCancel(ctx)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := root
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	var ec EntryCache
	if c, ok := opts.Cache.(EntryCache); ok && !opts.SkipXattrs && !opts.UserXattrs {
		ec = c
	}
	return &builder{
		racyBefore: unix.NsecToTimespec(time.Now().Add(-racyWindow).UnixNano()),
		entryCache: ec,
		opts:       opts,
		root:       root,
		prefix:     prefix,
		log:        log,
		ctx:        ctx,
		cancel:     cancel,
		walkQ:      newWorkQueue[walkTask](true),
		fileQ:      newWorkQueue[fileTask](false),
	}
}

// fail records the first error and stops the build.
func (b *builder) fail(err error) {
	b.errOnce.Do(func() { b.err = err })
	b.cancel()
}

func (b *builder) run() (*Node, error) {
	start := time.Now()
	threads := b.opts.Threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	root, err := b.loadNode("", "", newScratch())
	if err != nil {
		return nil, err
	}
	if !root.IsDir() {
		return nil, &InvalidError{Path: b.root, Reason: fmt.Sprintf("not a directory (mode %o)", root.Mode)}
	}

	var progressDone chan struct{}
	stopProgress := make(chan struct{})
	if b.opts.Progress != nil {
		progressDone = make(chan struct{})
		go b.reportProgress(stopProgress, progressDone)
	}

	switch {
	case b.opts.Batch != nil:
		b.batch = b.opts.Batch
	case b.opts.Store != nil:
		b.batch, b.ownBatch = b.opts.Store.Batch(), true
	}
	hasher := b.hasher
	if hasherKind == "lanes" || hasherKind == "" && fsverity.FastLeaves() {
		hasher = b.laneHasher
	}
	var wg sync.WaitGroup
	for range threads {
		wg.Go(b.walker)
		wg.Go(hasher)
	}
	b.walkPending.Store(1)
	b.walkQ.push(walkTask{node: root})
	wg.Wait()

	close(stopProgress)
	if progressDone != nil {
		<-progressDone
	}
	if b.ownBatch {
		if b.err != nil {
			b.batch.Abort()
		} else if err := b.batch.Flush(b.ctx); err != nil {
			return nil, fmt.Errorf("build from %s: %w", b.root, err)
		}
	}
	if b.err != nil {
		return nil, b.err
	}
	b.log.Debug("composefs: built tree",
		"dir", b.root, "entries", b.entries.Load(), "dirs", b.dirs.Load(),
		"files", b.files.Load(), "bytes", b.bytes.Load(),
		"objects", b.objects.Load(), "objects_written", b.objWritten.Load(),
		"threads", threads, "duration", time.Since(start))
	return root, nil
}

func (b *builder) snapshot() BuildProgress {
	return BuildProgress{
		Files:      b.files.Load(),
		Bytes:      b.bytes.Load(),
		Entries:    b.entries.Load(),
		TotalFiles: b.totalFiles.Load(),
		TotalBytes: b.totalBytes.Load(),
		WalkDone:   b.walkDone.Load(),
	}
}

func (b *builder) reportProgress(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			b.opts.Progress(b.snapshot())
			return
		case <-t.C:
			b.opts.Progress(b.snapshot())
		}
	}
}

// walker runs directory tasks until the walk is complete.
func (b *builder) walker() {
	sc := newScratch()
	for {
		t, ok := b.walkQ.pop()
		if !ok {
			return
		}
		if err := b.ctx.Err(); err != nil {
			b.fail(err)
		} else if t.dir == nil {
			b.readDir(t.node, t.rel, sc)
		} else {
			b.statBatch(t.dir, t.lo, t.hi, sc)
		}
		if b.walkPending.Add(-1) == 0 {
			b.walkDone.Store(true)
			b.walkQ.close()
			b.fileQ.close()
		}
	}
}

func (b *builder) pushWalk(t walkTask) {
	b.walkPending.Add(1)
	b.walkQ.push(t)
}

// hasher runs file tasks until the walk is complete and the queue empty.
func (b *builder) hasher() {
	h := fsverity.NewHasher(fsverity.SHA256)
	buf := make([]byte, hashBufSize)
	for {
		t, ok := b.fileQ.pop()
		if !ok {
			return
		}
		if err := b.ctx.Err(); err != nil {
			b.fail(err)
			continue
		}
		if err := b.hashFile(t, h, buf); err != nil {
			b.fail(err)
		}
	}
}

// hashBufSize is the read size for hashing: a multiple of the fs-verity
// block size, so whole blocks are hashed straight from the buffer.
const hashBufSize = 32 * fsverity.BlockSize

// scratch holds a walker's reusable buffers.
type scratch struct {
	xlist []byte
	xval  []byte
	link  []byte
	small []byte
}

func newScratch() *scratch {
	return &scratch{
		xlist: make([]byte, 1024),
		xval:  make([]byte, 1024),
		link:  make([]byte, unix.PathMax),
		small: make([]byte, InlineContentMax+1),
	}
}

// abs returns the absolute path of the entry rel ("" is the root).
func (b *builder) abs(rel string) string {
	if rel == "" {
		return b.root
	}
	return b.prefix + rel
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// pathRef locates an entry for *at system calls: normally the absolute
// path relative to AT_FDCWD; for paths too long for the kernel (PATH_MAX)
// an O_PATH descriptor of the parent directory and the entry's name.
//
// Within a directory being read (refIn), entries are looked up relative to
// a descriptor of it, and their paths are only built when needed.
type pathRef struct {
	dirfd  int
	name   string
	full   string // the absolute path, if built
	prefix string // else: the root with a trailing slash,
	dirRel string // and the directory's path below it
	owned  bool   // dirfd is closed by close
}

// abs returns the entry's absolute path.
func (p pathRef) abs() string {
	if p.full != "" {
		return p.full
	}
	return p.prefix + joinRel(p.dirRel, p.name)
}

func (p pathRef) close() {
	if p.owned {
		unix.Close(p.dirfd)
	}
}

// xattrPath is a path naming the entry itself (not a symlink's target)
// for the l*xattr calls.
func (p pathRef) xattrPath() string {
	if abs := p.abs(); p.dirfd == unix.AT_FDCWD || len(abs) < unix.PathMax {
		return abs
	}
	return "/proc/self/fd/" + strconv.Itoa(p.dirfd) + "/" + p.name
}

func (b *builder) ref(rel string) (pathRef, error) {
	abs := b.abs(rel)
	if len(abs) < unix.PathMax {
		return pathRef{dirfd: unix.AT_FDCWD, name: abs, full: abs}, nil
	}
	fd, err := b.openLongDir(filepath.Dir(rel))
	if err != nil {
		return pathRef{}, &fs.PathError{Op: "open", Path: filepath.Dir(abs), Err: err}
	}
	return pathRef{dirfd: fd, name: filepath.Base(rel), full: abs, owned: true}, nil
}

// refIn locates the entry name of the directory open as dirfd (whose
// path relative to the root is dirRel).
func (b *builder) refIn(dirfd int, dirRel, name string) pathRef {
	return pathRef{dirfd: dirfd, name: name, prefix: b.prefix, dirRel: dirRel}
}

// openLongDir opens the directory rel below the root with O_PATH, a few
// components at a time so that no path handed to the kernel is too long.
func (b *builder) openLongDir(rel string) (int, error) {
	fd, err := unix.Open(b.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for len(parts) > 0 {
		n, l := 0, 0
		for n < len(parts) && l+len(parts[n])+1 < 2048 {
			l += len(parts[n]) + 1
			n++
		}
		n = max(n, 1)
		next, err := unix.Openat(fd, strings.Join(parts[:n], "/"), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd, parts = next, parts[n:]
	}
	return fd, nil
}

func pathErr(op string, p pathRef, err error) error {
	return &fs.PathError{Op: op, Path: p.abs(), Err: err}
}

// invalidAt re-homes an *InvalidError from a Node method (whose Path is
// not known while the tree is being assembled) to the source path.
func invalidAt(abs string, err error) error {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return &InvalidError{Path: abs, Reason: ie.Reason}
	}
	return fmt.Errorf("%s: %w", abs, err)
}

// loadNode lstats the entry rel (named name in its parent) and fills a
// node from it: metadata, xattrs, symlink target, inline content. Regular
// files with external content are queued for hashing, directories for
// reading. A skipped device returns nil.
func (b *builder) loadNode(dirRel, name string, sc *scratch) (*Node, error) {
	p, err := b.ref(joinRel(dirRel, name))
	if err != nil {
		return nil, err
	}
	defer p.close()
	return b.loadNodeAt(p, dirRel, name, sc)
}

// loadNodeAt is loadNode for the entry p, named name in the directory
// dirRel.
func (b *builder) loadNodeAt(p pathRef, dirRel, name string, sc *scratch) (*Node, error) {
	if name != "" {
		if err := ValidName(name); err != nil {
			return nil, &InvalidError{Path: p.abs(), Reason: err.Error()}
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(p.dirfd, p.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, pathErr("lstat", p, err)
	}
	typ := st.Mode & ModeTypeMask
	if b.opts.SkipDevices && (typ == TypeChar || typ == TypeBlock) {
		return nil, nil
	}
	n := &Node{Name: name, Mode: st.Mode, Nlink: 1, UID: st.Uid, GID: st.Gid}
	if !b.opts.UseEpoch {
		n.Mtime = Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
	}
	switch typ {
	case TypeChar, TypeBlock:
		n.Rdev = st.Rdev
	case TypeSymlink:
		m, err := unix.Readlinkat(p.dirfd, p.name, sc.link)
		if err != nil {
			return nil, pathErr("readlink", p, err)
		}
		if m == 0 {
			return nil, &InvalidError{Path: p.abs(), Reason: "symlink without a target"}
		}
		if m >= len(sc.link) {
			return nil, &InvalidError{Path: p.abs(), Reason: fmt.Sprintf("symlink target longer than %d bytes", MaxSymlinkLen)}
		}
		n.Payload = string(sc.link[:m])
		n.Size = uint64(m)
	case TypeRegular:
		n.Size = uint64(st.Size)
		b.totalFiles.Add(1)
		b.totalBytes.Add(st.Size)
		if b.entryCache != nil {
			if ok, err := b.regularFromCache(n, p, dirRel, &st); ok || err != nil {
				return n, err
			}
		}
		if inlineContent(st.Size) {
			if err := b.readInline(n, p, &st, sc); err != nil {
				return nil, err
			}
		}
	case TypeDir, TypeFifo, TypeSocket:
	default:
		return nil, &InvalidError{Path: p.abs(), Reason: fmt.Sprintf("unknown file type (mode %o)", st.Mode)}
	}
	if !b.opts.SkipXattrs {
		if err := b.readXattrs(n, p, sc); err != nil {
			return nil, err
		}
	}
	if b.entryCache != nil && typ == TypeRegular && st.Size <= InlineContentMax && b.cacheable(keyOf(&st)) {
		// Read in full now (larger files once hashed).
		b.entryCache.AddFile(keyOf(&st).fileKey(), CachedFile{Content: n.Content, Xattrs: n.Xattrs})
	}
	b.entries.Add(1)
	switch {
	case typ == TypeDir:
		b.dirs.Add(1)
		// The root is queued by run once it is known to be a directory.
		if name != "" {
			b.pushWalk(walkTask{node: n, rel: joinRel(dirRel, name)})
		}
	case typ == TypeRegular && st.Size > InlineContentMax:
		b.fileQ.push(fileTask{node: n, rel: joinRel(dirRel, name), key: keyOf(&st), sparse: isSparse(&st)})
	case typ == TypeRegular:
		b.files.Add(1)
		b.bytes.Add(st.Size)
	}
	return n, nil
}

// regularFromCache fills a regular file's node from the entry cache if it
// knows the file's state: xattrs and inline content, or the digest if its
// object is in the store (if not, the file is queued for hashing as
// usual). It reports whether it handled the file.
func (b *builder) regularFromCache(n *Node, p pathRef, dirRel string, st *unix.Stat_t) (bool, error) {
	key := keyOf(st)
	cf, ok := b.entryCache.LookupFile(key.fileKey())
	if !ok {
		return false, nil
	}
	external := st.Size > InlineContentMax
	if !external && int64(len(cf.Content)) != st.Size {
		return false, nil // not this file's content after all: read it
	}
	for _, x := range cf.Xattrs {
		if err := n.SetXattr(x.Name, x.Value); err != nil {
			return false, invalidAt(p.abs(), err)
		}
	}
	b.entries.Add(1)
	if external {
		d := cf.Digest
		n.Digest = &d
		t := fileTask{node: n, key: key, sparse: isSparse(st)}
		if ok, err := b.cachedPresent(t, cf.Present); ok || err != nil {
			return true, err
		}
		n.Digest = nil
		t.rel = joinRel(dirRel, n.Name)
		b.fileQ.push(t) // the object is missing: hash and store the file
		return true, nil
	}
	if st.Size > 0 {
		n.Content = slices.Clone(cf.Content) // the tree's own
	}
	b.files.Add(1)
	b.bytes.Add(st.Size)
	return true, nil
}

// readInline reads a small file's content into n.Content.
func (b *builder) readInline(n *Node, p pathRef, st *unix.Stat_t, sc *scratch) error {
	fd, err := unix.Openat(p.dirfd, p.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathErr("open", p, err)
	}
	defer unix.Close(fd)
	got := 0
	for got < len(sc.small) {
		m, err := unix.Pread(fd, sc.small[got:], int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return pathErr("read", p, err)
		}
		if m == 0 {
			break
		}
		got += m
	}
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return pathErr("fstat", p, err)
	}
	if int64(got) != st.Size || keyOf(&now) != keyOf(st) {
		return fmt.Errorf("%s: %w", p.abs(), ErrSourceChanged)
	}
	n.Content = append([]byte(nil), sc.small[:got]...)
	return nil
}

// readXattrs reads the entry's extended attributes (without following a
// symlink), filtered by the options, sorted by name.
func (b *builder) readXattrs(n *Node, p pathRef, sc *scratch) error {
	xp := p.xattrPath()
	var size int
	for {
		var err error
		size, err = unix.Llistxattr(xp, sc.xlist)
		if err == nil {
			break
		}
		switch {
		case errors.Is(err, unix.ERANGE):
			need, err := unix.Llistxattr(xp, nil)
			if err != nil {
				return pathErr("listxattr", p, err)
			}
			sc.xlist = make([]byte, max(need, 2*len(sc.xlist)))
		case errors.Is(err, unix.ENOTSUP):
			return nil // filesystem without xattrs
		default:
			return pathErr("listxattr", p, err)
		}
	}
	list := sc.xlist[:size]
	for len(list) > 0 {
		i := 0
		for i < len(list) && list[i] != 0 {
			i++
		}
		raw := list[:i]
		list = list[min(i+1, len(list)):]
		if len(raw) == 0 {
			continue
		}
		if b.opts.UserXattrs && !hasPrefix(raw, "user.") {
			continue
		}
		name := string(raw)
		val, ok, err := getXattr(xp, name, sc)
		if err != nil {
			return pathErr("getxattr "+name, p, err)
		}
		if !ok {
			continue // removed since listxattr
		}
		if err := n.SetXattr(name, string(val)); err != nil {
			return invalidAt(p.abs(), err)
		}
	}
	sort.Slice(n.Xattrs, func(i, j int) bool { return n.Xattrs[i].Name < n.Xattrs[j].Name })
	return nil
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// getXattr returns the value of one xattr in sc.xval's storage; ok is
// false if the attribute does not exist (any more).
func getXattr(path, name string, sc *scratch) (val []byte, ok bool, err error) {
	for {
		m, err := unix.Lgetxattr(path, name, sc.xval)
		switch {
		case err == nil:
			return sc.xval[:m], true, nil
		case errors.Is(err, unix.ENODATA):
			return nil, false, nil
		case errors.Is(err, unix.ERANGE):
			need, err := unix.Lgetxattr(path, name, nil)
			if errors.Is(err, unix.ENODATA) {
				return nil, false, nil
			}
			if err != nil {
				return nil, false, err
			}
			sc.xval = make([]byte, max(need, 2*len(sc.xval)))
		default:
			return nil, false, err
		}
	}
}

// readDir reads a directory's names and lstats its entries in batches,
// the first here, the others as tasks for any walker.
func (b *builder) readDir(n *Node, rel string, sc *scratch) {
	p, err := b.ref(rel)
	if err != nil {
		b.fail(err)
		return
	}
	fd, err := unix.Openat(p.dirfd, p.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	p.close()
	if err != nil {
		b.fail(pathErr("open", p, err))
		return
	}
	f := os.NewFile(uintptr(fd), p.abs())
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		b.fail(fmt.Errorf("read directory %s: %w", p.abs(), err))
		return
	}
	if len(names) == 0 {
		return
	}
	// In name order already, the children need (almost) no sorting later.
	slices.Sort(names)
	d := &dirState{node: n, rel: rel, names: names, kids: make([]*Node, len(names))}
	batches := (len(names) + batchSize - 1) / batchSize
	d.left.Store(int32(batches))
	for i := 1; i < batches; i++ {
		b.pushWalk(walkTask{dir: d, lo: i * batchSize, hi: min((i+1)*batchSize, len(names))})
	}
	b.statBatch(d, 0, min(batchSize, len(names)), sc)
}

// statBatch loads entries lo..hi of a directory; the last batch to finish
// attaches the children, sorted.
func (b *builder) statBatch(d *dirState, lo, hi int, sc *scratch) {
	// The entries are looked up relative to the directory (no walk of
	// the whole path per entry).
	dirfd := -1
	if p, err := b.ref(d.rel); err == nil {
		if fd, err := unix.Openat(p.dirfd, p.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			dirfd = fd
		}
		p.close()
	}
	for i := lo; i < hi; i++ {
		if b.ctx.Err() != nil {
			break
		}
		var kid *Node
		var err error
		if dirfd >= 0 {
			kid, err = b.loadNodeAt(b.refIn(dirfd, d.rel, d.names[i]), d.rel, d.names[i], sc)
		} else {
			kid, err = b.loadNode(d.rel, d.names[i], sc) // by path (errors say why)
		}
		if err != nil {
			b.fail(err)
			break
		}
		d.kids[i] = kid
	}
	if dirfd >= 0 {
		unix.Close(dirfd)
	}
	if d.left.Add(-1) != 0 || b.ctx.Err() != nil {
		return
	}
	kids := d.kids[:0]
	for _, k := range d.kids {
		if k != nil {
			kids = append(kids, k)
		}
	}
	clear(d.kids[len(kids):])
	d.node.Children = kids
	d.names, d.kids = nil, nil
	if err := d.node.SortChildren(); err != nil {
		b.fail(invalidAt(b.abs(d.rel), err))
	}
}

// hashFile computes a regular file's fs-verity digest, copies it into the
// store if there is one, and checks that the file did not change meanwhile.
func (b *builder) hashFile(t fileTask, h *fsverity.Hasher, buf []byte) error {
	if b.opts.Cache != nil && b.entryCache == nil {
		if ok, err := b.fromCache(t); ok || err != nil {
			return err
		}
	}
	f, err := b.openTask(t)
	if err != nil {
		return err
	}
	defer f.Close()
	h.Reset()
	var total int64
	if t.sparse {
		total, err = b.hashSparse(f, h, buf, t.key.size)
	} else {
		// Exactly the size lstat saw: a file that grew meanwhile has
		// another size (and mtime) in the final fstat below.
		total, err = b.hashRange(f, h, buf, 0, t.key.size)
	}
	if err != nil {
		return err
	}
	if total != t.key.size {
		return shortRead(f, total, t.key.size)
	}
	return b.finishFile(t, f, h.Digest())
}

// openTask opens t's file for reading and checks that it is the file the
// walk saw.
func (b *builder) openTask(t fileTask) (*os.File, error) {
	p, err := b.ref(t.rel)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(p.dirfd, p.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	p.close()
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	f := os.NewFile(uintptr(fd), p.abs())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, pathErr("fstat", p, err)
	}
	if st.Dev != t.key.dev || st.Ino != t.key.ino {
		f.Close()
		return nil, fmt.Errorf("%s: %w (replaced by another file)", f.Name(), ErrSourceChanged)
	}
	return f, nil
}

func shortRead(f *os.File, read, size int64) error {
	return fmt.Errorf("%s: %w (read %d bytes, lstat said %d)", f.Name(), ErrSourceChanged, read, size)
}

// finishFile records d as the digest of t's file f (all t.key.size bytes
// of it hashed): it copies the file into the store if there is one and
// this build has not yet, checks that the file did not change meanwhile,
// and fills in the node and the cache.
func (b *builder) finishFile(t fileTask, f *os.File, d fsverity.Digest) error {
	written := false
	if b.batch != nil {
		if b.firstInsert(d) {
			b.objects.Add(1)
			var err error
			written, err = b.batch.InsertFile(b.ctx, f, t.key.size, d)
			if err != nil {
				return fmt.Errorf("store %s: %w", f.Name(), err)
			}
			if written {
				b.objWritten.Add(1)
			}
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &fs.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	if keyOf(&st) != t.key {
		if written {
			// The queued copy may not match d: drop it.
			b.batch.Discard(d)
		}
		return fmt.Errorf("%s: %w", f.Name(), ErrSourceChanged)
	}
	t.node.Digest = &d
	t.node.Payload = d.ObjectPath()
	b.files.Add(1)
	switch {
	case !b.cacheable(t.key):
	case b.entryCache != nil:
		b.entryCache.AddFile(t.key.fileKey(), CachedFile{Digest: d, Xattrs: t.node.Xattrs})
	case b.opts.Cache != nil:
		b.opts.Cache.Add(t.key.fileKey(), d)
	}
	return nil
}

// cachedPresent finishes a file whose digest the entry cache gave (in
// t.node.Digest) if its object is in the store (vouched for by the cache,
// or found there) or queued by this build (or there is no store).
func (b *builder) cachedPresent(t fileTask, vouched bool) (bool, error) {
	d := *t.node.Digest
	if b.batch != nil && !vouched {
		has, err := b.batch.Has(b.ctx, d)
		if err != nil || !has {
			return false, err
		}
	}
	t.node.Payload = d.ObjectPath()
	b.files.Add(1)
	b.bytes.Add(t.key.size)
	return true, nil
}

// racyWindow is how long before the start of a build a file must have
// last changed (ctime) for the build to record it in a cache (a variable
// for tests). A change made after the file was read then gives it a later
// ctime even where timestamps are coarse (a clock tick, or seconds on some
// filesystems); a file changed twice within one tick, once before and once
// after it was read, could otherwise keep its key with other content.
var racyWindow = 2 * time.Second

// cacheable reports whether a file state may be recorded in a cache.
func (b *builder) cacheable(k statKey) bool {
	return k.ctime.Sec < b.racyBefore.Sec || k.ctime.Sec == b.racyBefore.Sec && k.ctime.Nsec < b.racyBefore.Nsec
}

// firstInsert reports whether d is handled for the first time in this
// build, and records it.
func (b *builder) firstInsert(d fsverity.Digest) bool {
	b.insertedMu.Lock()
	defer b.insertedMu.Unlock()
	if _, dup := b.inserted[d]; dup {
		return false
	}
	if b.inserted == nil {
		b.inserted = make(map[fsverity.Digest]struct{})
	}
	b.inserted[d] = struct{}{}
	return true
}

func (k statKey) fileKey() FileKey {
	return FileKey{Dev: k.dev, Ino: k.ino, Size: k.size,
		MtimeSec: int64(k.mtime.Sec), MtimeNsec: int64(k.mtime.Nsec),
		CtimeSec: int64(k.ctime.Sec), CtimeNsec: int64(k.ctime.Nsec)}
}

// fromCache uses a cached digest for an unchanged file, without reading
// it, if its object is in the store or queued by this build (or there is
// no store). (Cache hits are not counted in b.objects, the objects handed
// to the store.)
func (b *builder) fromCache(t fileTask) (bool, error) {
	d, ok := b.opts.Cache.Lookup(t.key.fileKey())
	if !ok {
		return false, nil
	}
	t.node.Digest = &d
	ok, err := b.cachedPresent(t, false)
	if !ok {
		t.node.Digest = nil
	}
	return ok, err
}

// zeroChunk supplies the zeros of holes to the hasher. Never written.
var zeroChunk [hashBufSize]byte

// hashRange hashes f's content from off to end (-1: to EOF) with pread,
// and returns the number of bytes read.
func (b *builder) hashRange(f *os.File, h *fsverity.Hasher, buf []byte, off, end int64) (int64, error) {
	start := off
	for end < 0 || off < end {
		if err := b.ctx.Err(); err != nil {
			return off - start, err
		}
		chunk := buf
		if end >= 0 {
			chunk = buf[:min(int64(len(buf)), end-off)]
		}
		m, err := f.ReadAt(chunk, off)
		if m > 0 {
			h.Write(chunk[:m])
			off += int64(m)
			b.bytes.Add(int64(m))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return off - start, fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
	return off - start, nil
}

// hashSparse hashes a file with holes: data extents are read, holes are
// hashed as zeros without reading them (which would also fill the page
// cache with zero pages). It returns the number of bytes hashed.
func (b *builder) hashSparse(f *os.File, h *fsverity.Hasher, buf []byte, size int64) (int64, error) {
	fd := int(f.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			data = size // only a hole is left
		case err != nil:
			// No SEEK_DATA here: read the rest.
			n, err := b.hashRange(f, h, buf, off, -1)
			return off + n, err
		}
		data = min(data, size)
		for off < data {
			if err := b.ctx.Err(); err != nil {
				return off, err
			}
			m := min(int64(len(zeroChunk)), data-off)
			h.Write(zeroChunk[:m])
			off += m
			b.bytes.Add(m)
		}
		if off == size {
			break
		}
		hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		want := min(hole, size) - off
		n, err := b.hashRange(f, h, buf, off, off+want)
		off += n
		if err != nil || n < want {
			return off, err // a short read: the file shrank
		}
	}
	// Anything beyond size means the file grew: read it to count it.
	var probe [1]byte
	if m, _ := f.ReadAt(probe[:], off); m > 0 {
		off++
	}
	return off, nil
}
