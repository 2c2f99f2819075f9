// Package repo is the cfs repository: a directory that a static web server
// can serve as it is, holding content-addressed objects (exactly the
// composefs object store layout, so a deployment can use it directly as the
// overlay data directory), commits with their signatures, refs, and a
// signed summary of the refs. See docs/repository.md.
package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/lockfile"
)

// FormatVersion is the repository format this package reads and writes.
const FormatVersion = 1

// Layout of a repository, relative to its root.
const (
	ConfigFile  = "config"
	ObjectsDir  = "objects"
	CommitsDir  = "commits"
	RefsDir     = "refs"
	SummaryFile = "summary"
	TmpDir      = "tmp"   // staging; never served, safe to empty when no writer runs
	LocksDir    = "locks" // flock files; never served
	CacheDir    = "cache" // the build cache; never served

	commitExt    = ".commit"
	signatureExt = ".sig"
)

// Errors callers branch on.
var (
	ErrNotRepository = errors.New("not a cfs repository")
	ErrRefNotFound   = errors.New("ref not found")
	ErrCommitMissing = errors.New("commit not found")
	ErrCorruptCommit = errors.New("commit does not match its id")
	ErrInvalidRef    = errors.New("invalid ref name")
	ErrAmbiguous     = errors.New("ambiguous commit prefix")
)

// Config is the repository's config file.
type Config struct {
	Format          int    `json:"format"`
	ObjectAlgorithm string `json:"object-algorithm"`
}

// Repo is an open repository.
type Repo struct {
	root    string
	Objects *objstore.Store
}

// Init creates a repository at dir (which may exist and be empty) or opens
// it if it already is one.
func Init(dir string) (*Repo, error) {
	if r, err := Open(dir); err == nil {
		return r, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{ObjectsDir, CommitsDir, RefsDir, TmpDir, LocksDir, CacheDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	cfg, _ := json.MarshalIndent(Config{Format: FormatVersion, ObjectAlgorithm: "sha256"}, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, ConfigFile), append(cfg, '\n'), 0o644); err != nil {
		return nil, err
	}
	return Open(dir)
}

// Open opens an existing repository.
func Open(dir string) (*Repo, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", dir, ErrNotRepository, err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w: bad config: %v", dir, ErrNotRepository, err)
	}
	if cfg.Format != FormatVersion || cfg.ObjectAlgorithm != "sha256" {
		return nil, fmt.Errorf("%s: %w: format %d with %q objects (this cfs reads format %d, sha256)", dir, ErrNotRepository, cfg.Format, cfg.ObjectAlgorithm, FormatVersion)
	}
	store, err := objstore.Open(filepath.Join(dir, ObjectsDir))
	if err != nil {
		return nil, err
	}
	return &Repo{root: dir, Objects: store}, nil
}

// Path returns the repository's root directory.
func (r *Repo) Path() string { return r.root }

// TempDir returns the repository's staging directory (same filesystem as
// the objects, so renames are atomic).
func (r *Repo) TempDir() string { return filepath.Join(r.root, TmpDir) }

// ValidRefName checks a ref name: slash-separated components of letters,
// digits, '.', '_' and '-', none empty, none starting with '.', at most
// 255 bytes in all (os/x86_64/stable style).
func ValidRefName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("%w %q: must be 1..255 bytes", ErrInvalidRef, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part[0] == '.' {
			return fmt.Errorf("%w %q: empty component or component starting with '.'", ErrInvalidRef, name)
		}
		for _, c := range part {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w %q: character %q not allowed", ErrInvalidRef, name, c)
			}
		}
	}
	return nil
}

func (r *Repo) refPath(name string) string {
	return filepath.Join(r.root, RefsDir, filepath.FromSlash(name))
}

// ReadRef returns the commit a ref points at.
func (r *Repo) ReadRef(name string) (commit.ID, error) {
	if err := ValidRefName(name); err != nil {
		return commit.ID{}, err
	}
	b, err := os.ReadFile(r.refPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return commit.ID{}, fmt.Errorf("%w: %s", ErrRefNotFound, name)
	}
	if err != nil {
		return commit.ID{}, err
	}
	id, err := commit.ParseID(strings.TrimSpace(string(b)))
	if err != nil {
		return commit.ID{}, fmt.Errorf("ref %s: %w", name, err)
	}
	return id, nil
}

// LockRef takes the ref's writer lock: one writer at a time per ref.
func (r *Repo) LockRef(ctx context.Context, name string) (*lockfile.Lock, error) {
	if err := ValidRefName(name); err != nil {
		return nil, err
	}
	return lockfile.Exclusive(ctx, filepath.Join(r.root, LocksDir, "refs", filepath.FromSlash(name)+".lock"))
}

// WriteRef atomically points a ref at a commit, which must be stored
// complete already. The caller holds LockRef.
func (r *Repo) WriteRef(name string, id commit.ID) error {
	if err := ValidRefName(name); err != nil {
		return err
	}
	if _, err := os.Stat(r.commitPath(id)); err != nil {
		return fmt.Errorf("ref %s: %w: %s", name, ErrCommitMissing, id)
	}
	p := r.refPath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, []byte(id.String()+"\n"), 0o644)
}

// DeleteRef removes a ref.
func (r *Repo) DeleteRef(name string) error {
	if err := ValidRefName(name); err != nil {
		return err
	}
	if err := os.Remove(r.refPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrRefNotFound, name)
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(r.refPath(name)))
}

// Refs returns every ref and its commit, sorted by name.
func (r *Repo) Refs() ([]Ref, error) {
	var out []Ref
	base := filepath.Join(r.root, RefsDir)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		name := filepath.ToSlash(rel)
		if ValidRefName(name) != nil {
			return nil
		}
		id, err := r.ReadRef(name)
		if err != nil {
			return err
		}
		out = append(out, Ref{Name: name, Commit: id})
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Ref is a named pointer to a commit.
type Ref struct {
	Name   string    `json:"name"`
	Commit commit.ID `json:"commit"`
}

func (r *Repo) commitPath(id commit.ID) string {
	return filepath.Join(r.root, CommitsDir, id.String()+commitExt)
}

func (r *Repo) signaturePath(id commit.ID) string {
	return filepath.Join(r.root, CommitsDir, id.String()+signatureExt)
}

// WriteCommit stores a commit's canonical metadata and its signature
// envelope, each atomically, the signature first so that a commit file
// never exists without one. It returns the commit ID.
func (r *Repo) WriteCommit(canonical, envelope []byte) (commit.ID, error) {
	if _, err := commit.Parse(canonical); err != nil {
		return commit.ID{}, err
	}
	id := commit.IDOf(canonical)
	if err := os.MkdirAll(filepath.Join(r.root, CommitsDir), 0o755); err != nil {
		return id, err
	}
	if err := atomicfile.WriteFile(r.signaturePath(id), envelope, 0o644); err != nil {
		return id, err
	}
	if err := atomicfile.WriteFile(r.commitPath(id), canonical, 0o644); err != nil {
		return id, err
	}
	return id, nil
}

// WriteSignature replaces a stored commit's signature envelope (to add
// signatures).
func (r *Repo) WriteSignature(id commit.ID, envelope []byte) error {
	if !r.HasCommit(id) {
		return fmt.Errorf("%w: %s", ErrCommitMissing, id)
	}
	return atomicfile.WriteFile(r.signaturePath(id), envelope, 0o644)
}

// HasCommit reports whether the commit's metadata is stored.
func (r *Repo) HasCommit(id commit.ID) bool {
	_, err := os.Stat(r.commitPath(id))
	return err == nil
}

// ReadCommit loads a commit's metadata and checks that its bytes hash to id.
func (r *Repo) ReadCommit(id commit.ID) (*commit.Metadata, []byte, error) {
	b, err := readBounded(r.commitPath(id), commit.MaxMetadataSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrCommitMissing, id)
	}
	if err != nil {
		return nil, nil, err
	}
	if sum := sha256.Sum256(b); !bytes.Equal(sum[:], id[:]) {
		return nil, nil, fmt.Errorf("%w: commit %s hashes to %x", ErrCorruptCommit, id, sum)
	}
	m, err := commit.Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return m, b, nil
}

// MaxSignatureSize bounds a signature envelope.
const MaxSignatureSize = 4 << 20

// ReadSignature returns the stored signature envelope of a commit.
func (r *Repo) ReadSignature(id commit.ID) ([]byte, error) {
	b, err := readBounded(r.signaturePath(id), MaxSignatureSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("commit %s has no signature file: %w", id, err)
	}
	return b, err
}

// DeleteCommit removes a commit's metadata then its signature.
func (r *Repo) DeleteCommit(id commit.ID) error {
	for _, p := range []string{r.commitPath(id), r.signaturePath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return atomicfile.SyncDir(filepath.Join(r.root, CommitsDir))
}

// Commits lists every stored commit, sorted.
func (r *Repo) Commits() ([]commit.ID, error) {
	ents, err := os.ReadDir(filepath.Join(r.root, CommitsDir))
	if err != nil {
		return nil, err
	}
	var out []commit.ID
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), commitExt)
		if !ok {
			continue
		}
		if id, err := commit.ParseID(name); err == nil {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i][:], out[j][:]) < 0 })
	return out, nil
}

// Resolve turns a ref name, a full commit id or a unique id prefix of at
// least 8 hex characters into a commit ID.
//
// A trailing "^" (repeatable) names the parent, as in git and ostree.
func (r *Repo) Resolve(rev string) (commit.ID, error) {
	if base, ok := strings.CutSuffix(rev, "^"); ok && base != "" {
		id, err := r.Resolve(base)
		if err != nil {
			return id, err
		}
		m, _, err := r.ReadCommit(id)
		if err != nil {
			return id, err
		}
		if m.Parent == nil {
			return commit.ID{}, fmt.Errorf("%w: %s has no parent", ErrCommitMissing, base)
		}
		return *m.Parent, nil
	}
	if id, err := commit.ParseID(rev); err == nil {
		if !r.HasCommit(id) {
			return id, fmt.Errorf("%w: %s", ErrCommitMissing, id)
		}
		return id, nil
	}
	if ValidRefName(rev) == nil {
		if id, err := r.ReadRef(rev); err == nil {
			return id, nil
		} else if !errors.Is(err, ErrRefNotFound) {
			return id, err
		}
	}
	if len(rev) >= 8 && isHex(rev) {
		ids, err := r.Commits()
		if err != nil {
			return commit.ID{}, err
		}
		var found []commit.ID
		for _, id := range ids {
			if strings.HasPrefix(id.String(), strings.ToLower(rev)) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return commit.ID{}, fmt.Errorf("%w: %s matches %d commits", ErrAmbiguous, rev, len(found))
		}
	}
	return commit.ID{}, fmt.Errorf("%q is neither a ref nor a known commit: %w", rev, ErrRefNotFound)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// GCLock returns the repository's garbage-collection lock: writers that add
// objects hold it shared for their whole run; prune holds it exclusive while
// it marks and sweeps, so it never deletes an object a running build has
// just decided to reuse.
func (r *Repo) GCLock(ctx context.Context, exclusive bool) (*lockfile.Lock, error) {
	p := filepath.Join(r.root, LocksDir, "gc.lock")
	if exclusive {
		return lockfile.Exclusive(ctx, p)
	}
	return lockfile.Shared(ctx, p)
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", path, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}
