package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/lockfile"
)

// QuarantineDir holds what fsck --repair moved aside (objects/ab/cdef…,
// commits/<id>.commit and .sig), kept for forensics. It is never served
// and never read by cfs.
const QuarantineDir = "quarantine"

// FsckOptions configures Fsck.
type FsckOptions struct {
	// Trust, if set, is the trust store every commit's signature and the
	// summary's must satisfy. Without it signatures are only checked for
	// form (present, well-formed, over exactly the stored bytes) and the
	// report says they were not verified.
	Trust *sign.TrustStore
	// Repair moves corrupt objects and commits aside into quarantine/,
	// restores a missing or corrupt image object from its commit's dump
	// when the dump regenerates the signed digest, and, when no writer
	// holds the GC lock, removes the leftovers of interrupted writers.
	Repair bool
	// Workers hashing objects and checking commits; 0 = GOMAXPROCS.
	Workers int
	// Logger for progress records; nil discards.
	Logger *slog.Logger
}

// ProblemKind classifies a problem fsck found.
type ProblemKind string

// Problem kinds.
const (
	// An object whose content does not have its name's digest, or an
	// entry named like an object that is not a regular file.
	ProblemCorruptObject ProblemKind = "corrupt-object"
	// An object a commit needs (dump, image or content) is not stored.
	ProblemMissingObject ProblemKind = "missing-object"
	// A file that could not be read (I/O or permission error).
	ProblemUnreadable ProblemKind = "unreadable"
	// A file in objects/ or commits/ that has no business there.
	ProblemStrayFile ProblemKind = "stray-file"
	// A commit file that does not hash to its name or is not a valid
	// canonical commit document.
	ProblemCorruptCommit ProblemKind = "corrupt-commit"
	// A commit's (or the summary's) signature is missing, malformed, over
	// other bytes, or does not satisfy the trust store.
	ProblemBadSignature ProblemKind = "bad-signature"
	// A stored dump has its digest but does not parse as a cfs tree.
	ProblemInvalidDump ProblemKind = "invalid-dump"
	// The image regenerated from the stored dump does not have the
	// signed digest.
	ProblemImageMismatch ProblemKind = "image-mismatch"
	// A commit some of whose objects are missing or corrupt.
	ProblemIncompleteCommit ProblemKind = "incomplete-commit"
	// A ref file with a bad name or content.
	ProblemBadRef ProblemKind = "bad-ref"
	// A ref naming a commit that is not stored.
	ProblemDanglingRef ProblemKind = "dangling-ref"
	// The summary's signed payload is unparsable.
	ProblemBadSummary ProblemKind = "bad-summary"
	// The summary is missing or does not list the refs as they are: a
	// warning, since a build interrupted between moving its ref and
	// rewriting the summary leaves this, and the next build heals it.
	ProblemStaleSummary ProblemKind = "stale-summary"
)

// Problem is one thing fsck found wrong.
type Problem struct {
	Kind ProblemKind `json:"kind"`
	// Path of the file concerned, relative to the repository.
	Path   string           `json:"path,omitempty"`
	Object *fsverity.Digest `json:"object,omitempty"`
	Commit *commit.ID       `json:"commit,omitempty"`
	// Refs pointing at Commit.
	Refs   []string `json:"refs,omitempty"`
	Detail string   `json:"detail"`
	// Repair says what --repair did about it (empty: nothing).
	Repair string `json:"repair,omitempty"`
	// Err is the underlying error, for errors.Is/As, when there is one.
	Err error `json:"-"`
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(string(p.Kind))
	switch {
	case p.Path != "":
		b.WriteString(" " + p.Path)
	case p.Commit != nil:
		b.WriteString(" commit " + p.Commit.String())
	case p.Object != nil:
		b.WriteString(" object " + p.Object.String())
	}
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	if len(p.Refs) > 0 {
		b.WriteString(" (refs: " + strings.Join(p.Refs, ", ") + ")")
	}
	if p.Repair != "" {
		b.WriteString(" [repaired: " + p.Repair + "]")
	}
	return b.String()
}

// Leftover is a temporary file of an interrupted writer (or, while one
// runs, of a running writer): staging files in tmp/, objects/.tmp-*,
// .NAME.tmp-* beside published files, and a commit signature whose commit
// file was never written.
type Leftover struct {
	Path    string `json:"path"` // relative to the repository
	Size    int64  `json:"size"`
	Removed bool   `json:"removed,omitempty"`
}

// FsckReport is the result of Fsck.
type FsckReport struct {
	Objects     int64 `json:"objects"`
	ObjectBytes int64 `json:"object-bytes"`
	Commits     int   `json:"commits"`
	Refs        int   `json:"refs"`
	// SignaturesVerified is true when a trust store was given; otherwise
	// signatures were checked for form only.
	SignaturesVerified bool      `json:"signatures-verified"`
	Problems           []Problem `json:"problems"`
	// Warnings are inconsistencies an interrupted writer leaves and the
	// next build heals (a stale summary); they do not make the
	// repository unclean.
	Warnings []Problem `json:"warnings"`
	// IncompleteCommits lists the commits missing objects (after repair).
	IncompleteCommits []commit.ID `json:"incomplete-commits"`
	// Quarantined lists what --repair moved into quarantine/.
	Quarantined []string   `json:"quarantined"`
	Leftovers   []Leftover `json:"leftovers"`
	// LeftoversKept says why --repair did not remove the leftovers.
	LeftoversKept string `json:"leftovers-kept,omitempty"`
}

// Clean reports whether no problem was found (leftovers and warnings are
// not problems).
func (rep *FsckReport) Clean() bool { return len(rep.Problems) == 0 }

// Find returns the problems of a kind.
func (rep *FsckReport) Find(kind ProblemKind) []Problem {
	var out []Problem
	for _, p := range rep.Problems {
		if p.Kind == kind {
			out = append(out, p)
		}
	}
	return out
}

// objState is what the object scan found.
type objState uint8

const (
	objGood objState = iota + 1
	objCorrupt
	objGone // quarantined
)

type fsck struct {
	r    *Repo
	opts FsckOptions
	log  *slog.Logger

	mu       sync.Mutex
	rep      FsckReport
	objects  map[fsverity.Digest]objState
	missing  map[fsverity.Digest]bool // missing-object problems reported
	restored map[fsverity.Digest]bool // images restored
	refs     map[commit.ID][]string
	probsObj []Problem // per phase, sorted before they are joined
	probsCmt []Problem
}

// Fsck checks the whole repository: every object re-hashed against its
// name (on Workers goroutines), every commit's metadata against its id,
// its signature (against opts.Trust, or for form only), its image
// regenerated from the stored dump and compared with the signed digest,
// every object its dump references present and intact, every ref naming a
// stored commit, and the summary listing the refs as they are. Leftovers
// of interrupted writers are listed.
//
// Problems are reported, not returned: the error is for failures to run
// the check at all (unreadable directories, a cancelled ctx). Fsck holds
// the GC lock shared, so no prune runs meanwhile; with Repair it takes the
// lock exclusively if no writer holds it (then leftovers are removed, and
// builds wait until Fsck returns). A stale summary is a warning, not a
// problem: an interrupted build leaves one and the next build heals it.
func (r *Repo) Fsck(ctx context.Context, opts FsckOptions) (*FsckReport, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	f := &fsck{r: r, opts: opts, log: opts.Logger,
		objects: map[fsverity.Digest]objState{}, missing: map[fsverity.Digest]bool{}, restored: map[fsverity.Digest]bool{}, refs: map[commit.ID][]string{}}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.rep.SignaturesVerified = opts.Trust != nil
	f.rep.Problems, f.rep.IncompleteCommits, f.rep.Quarantined = []Problem{}, []commit.ID{}, []string{}
	lock, exclusive, err := f.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()

	if err := f.scanObjects(ctx); err != nil {
		return nil, err
	}
	f.log.Debug("objects checked", "objects", f.rep.Objects, "bytes", f.rep.ObjectBytes)
	if err := f.checkCommits(ctx); err != nil {
		return nil, err
	}
	f.log.Debug("commits checked", "commits", f.rep.Commits)
	var probsRef []Problem
	if probsRef, err = f.checkRefs(); err != nil {
		return nil, err
	}
	probsSum := f.checkSummary()
	f.rep.Warnings = []Problem{}
	probsSum = slices.DeleteFunc(probsSum, func(p Problem) bool {
		if p.Kind == ProblemStaleSummary {
			f.rep.Warnings = append(f.rep.Warnings, p)
			return true
		}
		return false
	})
	if f.rep.Leftovers, err = r.leftovers(); err != nil {
		return nil, err
	}
	if opts.Repair {
		if exclusive {
			for i := range f.rep.Leftovers {
				if err := os.RemoveAll(filepath.Join(r.root, f.rep.Leftovers[i].Path)); err != nil {
					return nil, fmt.Errorf("remove leftover: %w", err)
				}
				f.rep.Leftovers[i].Removed = true
			}
		} else if len(f.rep.Leftovers) > 0 {
			f.rep.LeftoversKept = "a writer holds the GC lock, so these may be its files"
		}
	}

	sortProblems(f.probsObj)
	sortProblems(f.probsCmt)
	f.rep.Problems = slices.Concat(f.rep.Problems, f.probsObj, f.probsCmt, probsRef, probsSum)
	for i, p := range f.rep.Problems {
		if p.Commit != nil {
			f.rep.Problems[i].Refs = f.refs[*p.Commit]
		}
		if p.Kind == ProblemIncompleteCommit {
			f.rep.IncompleteCommits = append(f.rep.IncompleteCommits, *p.Commit)
		}
	}
	slices.Sort(f.rep.Quarantined)
	return &f.rep, nil
}

func sortProblems(ps []Problem) {
	key := func(p Problem) string {
		var k string
		if p.Commit != nil {
			k = p.Commit.String()
		}
		return k + "\x00" + string(p.Kind) + "\x00" + p.Path
	}
	slices.SortStableFunc(ps, func(a, b Problem) int { return strings.Compare(key(a), key(b)) })
}

// lock takes the GC lock: shared, or with Repair exclusive if no writer
// holds it. A repository we may not write to is checked without the lock
// (unless repairing).
func (f *fsck) lock(ctx context.Context) (*lockfile.Lock, bool, error) {
	if f.opts.Repair {
		l, err := lockfile.TryExclusive(f.r.gcLockPath())
		if err == nil {
			return l, true, nil
		}
		if !errors.Is(err, lockfile.ErrLocked) {
			return nil, false, err
		}
		f.log.Info("a writer is running: leftovers will not be removed")
	}
	l, err := f.r.GCLock(ctx, false)
	if err != nil && !f.opts.Repair && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
		f.log.Warn("checking without the GC lock: a prune running meanwhile would show as missing objects", "err", err)
		return nil, false, nil
	}
	return l, false, err
}

func (r *Repo) gcLockPath() string { return filepath.Join(r.root, LocksDir, "gc.lock") }

func (f *fsck) rel(p string) string {
	if rel, err := relTo(f.r.root, p); err == nil {
		return filepath.ToSlash(rel)
	}
	return p
}

func (f *fsck) objectProblem(p Problem) {
	f.mu.Lock()
	f.probsObj = append(f.probsObj, p)
	f.mu.Unlock()
}

func (f *fsck) commitProblem(p Problem) {
	f.mu.Lock()
	f.probsCmt = append(f.probsCmt, p)
	f.mu.Unlock()
}

// relTo is filepath.Rel with both paths made absolute first (the object
// store's directory is absolute, the repository's may not be).
func relTo(base, p string) (string, error) {
	ab, err := filepath.Abs(base)
	if err != nil {
		return "", err
	}
	ap, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.Rel(ab, ap)
}

// scanObjects lists the object store (noting stray files; temporary files
// are leftovers, listed later) and re-hashes every object in parallel.
// With Repair, corrupt objects are then quarantined.
func (f *fsck) scanObjects(ctx context.Context) error {
	dir := f.r.Objects.Dir()
	top, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsck: %w", err)
	}
	var digests []fsverity.Digest
	for _, e := range top {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			continue // a leftover
		}
		if !e.IsDir() || len(name) != 2 || !isLowerHexString(name) {
			f.objectProblem(Problem{Kind: ProblemStrayFile, Path: f.rel(filepath.Join(dir, name)), Detail: "not an object fan-out directory"})
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, name))
		if err != nil {
			f.objectProblem(Problem{Kind: ProblemUnreadable, Path: f.rel(filepath.Join(dir, name)), Detail: err.Error(), Err: err})
			continue
		}
		for _, o := range ents {
			p := filepath.Join(dir, name, o.Name())
			if strings.HasPrefix(o.Name(), ".tmp-") {
				continue // a leftover staged in the fan-out directory
			}
			d, err := fsverity.ParseDigest(name + o.Name())
			if err != nil || len(o.Name()) != 62 || !isLowerHexString(o.Name()) {
				f.objectProblem(Problem{Kind: ProblemStrayFile, Path: f.rel(p), Detail: "not named like an object"})
				continue
			}
			digests = append(digests, d)
		}
	}
	err = forEach(ctx, f.opts.Workers, digests, func(ctx context.Context, d fsverity.Digest) error {
		p := f.r.Objects.Path(d)
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile by the build that wrote it
		}
		switch {
		case err == nil && !st.Mode().IsRegular():
			err = &objstore.CorruptObjectError{Path: p, Digest: d, Reason: "not a regular file (" + st.Mode().Type().String() + ")"}
		case err == nil:
			err = f.r.Objects.Verify(ctx, d)
		}
		state := objGood
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, objstore.ErrCorrupt):
			state = objCorrupt
			f.objectProblem(Problem{Kind: ProblemCorruptObject, Path: f.rel(p), Object: &d, Detail: corruptDetail(err), Err: err})
		case errors.Is(err, fs.ErrNotExist):
			return nil
		default:
			state = objCorrupt
			f.objectProblem(Problem{Kind: ProblemUnreadable, Path: f.rel(p), Object: &d, Detail: err.Error(), Err: err})
		}
		f.mu.Lock()
		f.objects[d] = state
		f.rep.Objects++
		f.rep.ObjectBytes += st.Size()
		f.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if !f.opts.Repair {
		return nil
	}
	for i, p := range f.probsObj {
		if p.Kind != ProblemCorruptObject || p.Object == nil {
			continue
		}
		dst, err := f.r.quarantine(f.r.Objects.Path(*p.Object), filepath.Join(ObjectsDir, filepath.FromSlash(p.Object.ObjectPath())))
		if err != nil {
			return fmt.Errorf("fsck: quarantine %s: %w", p.Path, err)
		}
		f.probsObj[i].Repair = "moved to " + f.rel(dst)
		f.rep.Quarantined = append(f.rep.Quarantined, f.rel(dst))
		f.objects[*p.Object] = objGone
	}
	return nil
}

func corruptDetail(err error) string {
	var ce *objstore.CorruptObjectError
	if errors.As(err, &ce) {
		if ce.Reason != "" {
			return ce.Reason
		}
		return "content has fs-verity digest " + ce.Found.String()
	}
	return err.Error()
}

func isLowerHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// quarantine moves src to QuarantineDir/rel (adding .1, .2, … if that
// name is taken) and returns the new path.
func (r *Repo) quarantine(src, rel string) (string, error) {
	dst := filepath.Join(r.root, QuarantineDir, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(r.root, QuarantineDir, rel) + "." + strconv.Itoa(i)
	}
	if err := os.Rename(src, dst); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(src)); err != nil {
		return dst, err
	}
	return dst, atomicfile.SyncDir(filepath.Dir(dst))
}

// state returns an object's state, checking objects the scan did not see
// (written since) on the spot. Absent objects are 0.
func (f *fsck) state(ctx context.Context, d fsverity.Digest) objState {
	f.mu.Lock()
	s, ok := f.objects[d]
	f.mu.Unlock()
	if ok {
		return s
	}
	err := f.r.Objects.Verify(ctx, d)
	switch {
	case err == nil:
		s = objGood
	case errors.Is(err, fs.ErrNotExist):
		return 0
	case ctx.Err() != nil:
		return objCorrupt // the caller returns ctx.Err()
	case errors.Is(err, objstore.ErrCorrupt):
		s = objCorrupt
		f.objectProblem(Problem{Kind: ProblemCorruptObject, Path: f.rel(f.r.Objects.Path(d)), Object: &d, Detail: corruptDetail(err), Err: err})
	default:
		s = objCorrupt
		f.objectProblem(Problem{Kind: ProblemUnreadable, Path: f.rel(f.r.Objects.Path(d)), Object: &d, Detail: err.Error(), Err: err})
	}
	f.mu.Lock()
	f.objects[d] = s
	f.mu.Unlock()
	return s
}

func (f *fsck) checkCommits(ctx context.Context) error {
	ids, err := f.r.Commits()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsck: %w", err)
	}
	f.rep.Commits = len(ids)
	return forEach(ctx, f.opts.Workers, ids, f.checkCommit)
}

// checkCommit checks one commit; only a cancelled ctx or a failed repair
// is an error.
func (f *fsck) checkCommit(ctx context.Context, id commit.ID) error {
	m, canonical, err := f.r.ReadCommit(id)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrCommitMissing) {
			return nil // removed meanwhile
		}
		p := Problem{Kind: ProblemCorruptCommit, Path: f.rel(f.r.commitPath(id)), Commit: &id, Detail: err.Error(), Err: err}
		if f.opts.Repair && (errors.Is(err, ErrCorruptCommit) || errors.Is(err, commit.ErrInvalidMetadata)) {
			var moved []string
			for _, src := range []string{f.r.commitPath(id), f.r.signaturePath(id)} {
				dst, err := f.r.quarantine(src, filepath.Join(CommitsDir, filepath.Base(src)))
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return fmt.Errorf("fsck: quarantine %s: %w", src, err)
				}
				moved = append(moved, f.rel(dst))
			}
			p.Repair = "moved to " + strings.Join(moved, " and ")
			f.mu.Lock()
			f.rep.Quarantined = append(f.rep.Quarantined, moved...)
			f.mu.Unlock()
		}
		f.commitProblem(p)
		return nil
	}
	f.checkSignature(id, canonical)

	var missing, corrupt []string
	note := func(what string, d fsverity.Digest, s objState, file string) {
		switch s {
		case objGood:
		case objCorrupt:
			corrupt = append(corrupt, what)
		default:
			missing = append(missing, what)
			f.mu.Lock()
			first := !f.missing[d]
			f.missing[d] = true
			f.mu.Unlock()
			if first {
				detail := what + " of commit " + id.String()
				if file != "" {
					detail += " (" + file + ")"
				}
				f.commitProblem(Problem{Kind: ProblemMissingObject, Path: f.rel(f.r.Objects.Path(d)), Object: &d, Commit: &id, Detail: detail})
			}
		}
	}
	dumpState := f.state(ctx, m.Dump.Digest)
	note("dump", m.Dump.Digest, dumpState, "")
	imageState := f.state(ctx, m.Image.Digest)
	if dumpState == objGood {
		restored, err := f.checkTree(ctx, id, m, imageState, note)
		if err != nil {
			return err
		}
		if restored {
			imageState = objGood
		}
	}
	note("image", m.Image.Digest, imageState, "")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(missing)+len(corrupt) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+summarize(missing))
	}
	if len(corrupt) > 0 {
		parts = append(parts, "corrupt "+summarize(corrupt))
	}
	if dumpState != objGood {
		parts = append(parts, "its content objects cannot be listed without the dump")
	}
	f.commitProblem(Problem{Kind: ProblemIncompleteCommit, Path: f.rel(f.r.commitPath(id)), Commit: &id, Detail: strings.Join(parts, "; ")})
	return nil
}

// summarize turns ["dump", "content object", "content object"] into
// "dump, 2 content objects".
func summarize(whats []string) string {
	counts := map[string]int{}
	var order []string
	for _, w := range whats {
		if counts[w] == 0 {
			order = append(order, w)
		}
		counts[w]++
	}
	var out []string
	for _, w := range order {
		if counts[w] == 1 {
			out = append(out, w)
		} else {
			out = append(out, fmt.Sprintf("%d %ss", counts[w], w))
		}
	}
	return strings.Join(out, ", ")
}

// checkSignature checks the commit's signature: against the trust store,
// or without one for form only.
func (f *fsck) checkSignature(id commit.ID, canonical []byte) {
	p := Problem{Kind: ProblemBadSignature, Path: f.rel(f.r.signaturePath(id)), Commit: &id}
	if f.opts.Trust != nil {
		if _, err := f.r.VerifySignature(id, f.opts.Trust); err != nil {
			p.Detail, p.Err = err.Error(), err
			f.commitProblem(p)
		}
		return
	}
	raw, err := f.r.ReadSignature(id)
	if err != nil {
		p.Detail, p.Err = err.Error(), err
		f.commitProblem(p)
		return
	}
	env, err := sign.ParseEnvelope(raw)
	switch {
	case err != nil:
		p.Detail, p.Err = err.Error(), err
	case env.PayloadType != commit.PayloadType:
		p.Detail, p.Err = fmt.Sprintf("payload type %q, want %q", env.PayloadType, commit.PayloadType), sign.ErrPayloadType
	case len(env.Signatures) == 0:
		p.Detail, p.Err = sign.ErrNoSignature.Error(), sign.ErrNoSignature
	case !bytes.Equal(env.Payload, canonical):
		p.Detail, p.Err = ErrPayloadMismatch.Error(), ErrPayloadMismatch
	default:
		return
	}
	f.commitProblem(p)
}

// checkTree parses the commit's dump, regenerates its image and compares
// the digest with the signed one (restoring a missing or corrupt image
// object with Repair), and checks every content object the tree needs.
func (f *fsck) checkTree(ctx context.Context, id commit.ID, m *commit.Metadata, imageState objState, note func(string, fsverity.Digest, objState, string)) (restored bool, err error) {
	dumpPath := f.rel(f.r.Objects.Path(m.Dump.Digest))
	root, err := f.r.LoadTree(ctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		kind := ProblemInvalidDump
		if errors.Is(err, objstore.ErrCorrupt) {
			kind = ProblemCorruptObject // changed since the scan
		}
		f.commitProblem(Problem{Kind: kind, Path: dumpPath, Object: &m.Dump.Digest, Commit: &id, Detail: err.Error(), Err: err})
		return false, nil
	}
	d, err := erofs.Write(io.Discard, root, erofs.DefaultWriteOptions())
	switch {
	case err != nil:
		f.commitProblem(Problem{Kind: ProblemInvalidDump, Path: dumpPath, Object: &m.Dump.Digest, Commit: &id, Detail: "regenerating the image: " + err.Error(), Err: err})
	case d != m.Image.Digest:
		err := fmt.Errorf("%w: signed %s, regenerated %s", ErrImageMismatch, m.Image.Digest, d)
		f.commitProblem(Problem{Kind: ProblemImageMismatch, Path: f.rel(f.r.commitPath(id)), Commit: &id, Detail: err.Error(), Err: err})
	case f.opts.Repair && imageState != objGood:
		if err := f.restoreImage(ctx, id, m, root); err != nil {
			return false, err
		}
		restored = true
	}

	err = root.Walk(func(p string, n *composefs.Node) error {
		if !n.HasExternalData() {
			return nil
		}
		od, err := fsverity.ParseObjectPath(n.Payload)
		if err != nil {
			f.commitProblem(Problem{Kind: ProblemInvalidDump, Path: dumpPath, Object: &m.Dump.Digest, Commit: &id,
				Detail: fmt.Sprintf("%s: payload %q is not an object path", p, n.Payload), Err: err})
			return nil
		}
		note("content object", od, f.state(ctx, od), p)
		return ctx.Err()
	})
	return restored, err
}

// restoreImage stores the image regenerated from root (whose digest was
// just checked) in place of a missing or quarantined image object.
func (f *fsck) restoreImage(ctx context.Context, id commit.ID, m *commit.Metadata, root *composefs.Node) error {
	f.mu.Lock()
	done := f.restored[m.Image.Digest]
	f.restored[m.Image.Digest] = true
	f.mu.Unlock()
	if done {
		return nil // another commit with the same image did it
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := erofs.Write(pw, root, erofs.DefaultWriteOptions())
		pw.CloseWithError(err)
	}()
	d, _, err := f.r.Objects.Insert(ctx, pr)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("fsck: restore image of commit %s: %w", id, err)
	}
	if d != m.Image.Digest {
		return fmt.Errorf("fsck: restore image of commit %s: stored %s, want %s", id, d, m.Image.Digest)
	}
	const how = "regenerated from the stored dump"
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[d] = objGood
	for i, p := range f.probsObj {
		if p.Object != nil && *p.Object == d {
			f.probsObj[i].Repair += "; " + how
			return nil
		}
	}
	f.probsCmt = append(f.probsCmt, Problem{Kind: ProblemMissingObject, Path: f.rel(f.r.Objects.Path(d)), Object: &d, Commit: &id,
		Detail: "image of commit " + id.String(), Repair: how})
	return nil
}

// checkRefs reads every ref file (not through Refs, which stops at the
// first bad one) and checks that its commit is stored.
func (f *fsck) checkRefs() ([]Problem, error) {
	var probs []Problem
	base := filepath.Join(f.r.root, RefsDir)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == base {
				return nil
			}
			probs = append(probs, Problem{Kind: ProblemUnreadable, Path: f.rel(p), Detail: err.Error(), Err: err})
			return nil
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil // directories, and leftovers (listed later)
		}
		rel, _ := filepath.Rel(base, p)
		name := filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			probs = append(probs, Problem{Kind: ProblemBadRef, Path: f.rel(p), Detail: "not a regular file"})
			return nil
		}
		id, err := f.r.ReadRef(name)
		if err != nil {
			probs = append(probs, Problem{Kind: ProblemBadRef, Path: f.rel(p), Detail: err.Error(), Err: err})
			return nil
		}
		f.rep.Refs++
		f.refs[id] = append(f.refs[id], name)
		if !f.r.HasCommit(id) {
			probs = append(probs, Problem{Kind: ProblemDanglingRef, Path: f.rel(p), Commit: &id,
				Detail: fmt.Sprintf("ref %s names commit %s, which is not stored", name, id), Err: ErrCommitMissing})
		}
		return nil
	})
	return probs, err
}

// checkSummary checks that the summary exists when there are refs, is
// signed (verified against the trust store when there is one) and lists
// exactly the refs.
func (f *fsck) checkSummary() []Problem {
	path := filepath.Join(f.r.root, SummaryFile)
	bad := func(kind ProblemKind, detail string, err error) []Problem {
		return []Problem{{Kind: kind, Path: SummaryFile, Detail: detail, Err: err}}
	}
	b, err := readBounded(path, MaxSignatureSize)
	if errors.Is(err, fs.ErrNotExist) {
		if f.rep.Refs == 0 {
			return nil
		}
		return bad(ProblemStaleSummary, "no summary, but the repository has refs", err)
	}
	if err != nil {
		return bad(ProblemUnreadable, err.Error(), err)
	}
	env, err := sign.ParseEnvelope(b)
	if err != nil {
		return bad(ProblemBadSignature, err.Error(), err)
	}
	payload := env.Payload
	if f.opts.Trust != nil {
		if payload, _, err = sign.Verify(env, SummaryPayloadType, f.opts.Trust); err != nil {
			return bad(ProblemBadSignature, err.Error(), err)
		}
	} else if env.PayloadType != SummaryPayloadType || len(env.Signatures) == 0 {
		return bad(ProblemBadSignature, fmt.Sprintf("payload type %q with %d signatures", env.PayloadType, len(env.Signatures)), sign.ErrPayloadType)
	}
	var s Summary
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return bad(ProblemBadSummary, "unparsable: "+err.Error(), err)
	}
	actual := map[string]commit.ID{}
	for id, names := range f.refs {
		for _, n := range names {
			actual[n] = id
		}
	}
	var diffs []string
	for name, id := range actual {
		if e, ok := s.Refs[name]; !ok {
			diffs = append(diffs, name+" not listed")
		} else if e.Commit != id {
			diffs = append(diffs, fmt.Sprintf("%s listed at %s, the ref is at %s", name, e.Commit.Short(), id.Short()))
		}
	}
	for name := range s.Refs {
		if _, ok := actual[name]; !ok {
			diffs = append(diffs, name+" listed but not a ref")
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	return bad(ProblemStaleSummary, "the summary is stale: "+strings.Join(diffs, "; "), nil)
}

// leftovers lists the temporary files of interrupted writers: everything
// in tmp/, objects/.tmp-* and objects/XX/.tmp-*, .NAME.tmp-* files beside published files (in
// the root, commits/, cache/ and refs/), and signatures in commits/ whose
// commit file was never written.
func (r *Repo) leftovers() ([]Leftover, error) {
	out := []Leftover{}
	add := func(p string) {
		rel, _ := relTo(r.root, p)
		out = append(out, Leftover{Path: filepath.ToSlash(rel), Size: diskUsage(p)})
	}
	isTemp := func(name string) bool { return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") }
	list := func(dir string, match func(string) bool) error {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list leftovers: %w", err)
		}
		for _, e := range ents {
			if match(e.Name()) {
				add(filepath.Join(dir, e.Name()))
			}
		}
		return nil
	}
	steps := []struct {
		dir   string
		match func(string) bool
	}{
		{filepath.Join(r.root, TmpDir), func(string) bool { return true }},
		{r.Objects.Dir(), func(n string) bool { return strings.HasPrefix(n, ".tmp-") }},
		{r.root, isTemp},
		{filepath.Join(r.root, CommitsDir), isTemp},
		{filepath.Join(r.root, CacheDir), isTemp},
	}
	for _, s := range steps {
		if err := list(s.dir, s.match); err != nil {
			return nil, err
		}
	}
	// Objects are also staged in their fan-out directories.
	fanouts, err := os.ReadDir(r.Objects.Dir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list leftovers: %w", err)
	}
	for _, e := range fanouts {
		if e.IsDir() && len(e.Name()) == 2 {
			if err := list(filepath.Join(r.Objects.Dir(), e.Name()), func(n string) bool { return strings.HasPrefix(n, ".tmp-") }); err != nil {
				return nil, err
			}
		}
	}
	refs := filepath.Join(r.root, RefsDir)
	err = filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && isTemp(d.Name()) {
			add(p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list leftovers: %w", err)
	}
	// Signatures without their commit: the builder writes the signature
	// first, so a crash can leave one.
	ents, err := os.ReadDir(filepath.Join(r.root, CommitsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list leftovers: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), signatureExt)
		if !ok {
			continue
		}
		if id, err := commit.ParseID(name); err == nil && !r.HasCommit(id) {
			add(r.signaturePath(id))
		}
	}
	return out, nil
}

// diskUsage returns the apparent size of a file, or of everything below a
// directory.
func diskUsage(p string) int64 {
	var n int64
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// forEach calls fn for every item on workers goroutines and returns the
// first error, after which the remaining items are skipped.
func forEach[T any](ctx context.Context, workers int, items []T, fn func(context.Context, T) error) error {
	workers = max(1, min(workers, len(items)))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= len(items) || first != nil || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				item := items[next]
				next++
				mu.Unlock()
				if err := fn(ctx, item); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
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
