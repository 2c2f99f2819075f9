package repo_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
	"github.com/cfs-dev/cfs/internal/lockfile"
)

// fixture is a repository with a signing key and its trust store.
type fixture struct {
	t      *testing.T
	r      *repo.Repo
	signer *sign.Signer
	trust  *sign.TrustStore
	ts     int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	s, ts := newSigner(t)
	return &fixture{t: t, r: r, signer: s, trust: ts, ts: 1700000000}
}

func newSigner(t *testing.T) (*sign.Signer, *sign.TrustStore) {
	t.Helper()
	priv, _, err := sign.Keygen(sign.KeyEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.ParseSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := sign.NewTrustStore([]*sign.PublicKey{s.PublicKey()}, nil, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s, ts
}

// content returns file content big enough to be stored as an object.
func content(s string) string {
	b := []byte(s + "\n")
	for len(b) < 300 {
		b = append(b, s...)
	}
	return string(b)
}

// build writes files (path → content) into a fresh directory and builds
// it into ref.
func (f *fixture) build(ref string, files map[string]string) *builder.Result {
	f.t.Helper()
	dir := f.t.TempDir()
	for p, c := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	f.ts++
	res, err := builder.Build(context.Background(), f.r, builder.Source{Dir: dir}, builder.Options{
		Ref: ref, Subject: "test", Timestamp: f.ts, Signers: []*sign.Signer{f.signer},
	})
	if err != nil {
		f.t.Fatalf("build %s: %v", ref, err)
	}
	return res
}

func (f *fixture) fsck(opts repo.FsckOptions) *repo.FsckReport {
	f.t.Helper()
	rep, err := f.r.Fsck(context.Background(), opts)
	if err != nil {
		f.t.Fatalf("fsck: %v", err)
	}
	return rep
}

func (f *fixture) mustClean(rep *repo.FsckReport) {
	f.t.Helper()
	for _, p := range rep.Problems {
		f.t.Errorf("unexpected problem: %s", p)
	}
}

// corrupt flips one byte in the middle of a file.
func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// oneProblem returns the single problem of kind, failing otherwise.
func oneProblem(t *testing.T, rep *repo.FsckReport, kind repo.ProblemKind) repo.Problem {
	t.Helper()
	ps := rep.Find(kind)
	if len(ps) != 1 {
		t.Fatalf("want one %s problem, got %d; all problems: %v", kind, len(ps), rep.Problems)
	}
	return ps[0]
}

func countObjects(t *testing.T, r *repo.Repo) (n, size int64) {
	t.Helper()
	err := r.Objects.Walk(context.Background(), func(d fsverity.Digest) error {
		st, err := os.Stat(r.Objects.Path(d))
		if err != nil {
			return err
		}
		n++
		size += st.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

func TestFsckClean(t *testing.T) {
	f := newFixture(t)
	f.build("os/x86_64/stable", map[string]string{"etc/a": content("a"), "usr/bin/b": content("b"), "small": "tiny"})
	f.build("os/x86_64/stable", map[string]string{"etc/a": content("a2"), "usr/bin/b": content("b")})
	f.build("os/aarch64/stable", map[string]string{"x": content("x")})
	objs, size := countObjects(t, f.r)

	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	f.mustClean(rep)
	if rep.Objects != objs || rep.ObjectBytes != size || rep.Commits != 3 || rep.Refs != 2 || !rep.SignaturesVerified {
		t.Errorf("counts: %+v; want %d objects of %d bytes, 3 commits, 2 refs, signatures verified", rep, objs, size)
	}
	if len(rep.Leftovers) != 0 || len(rep.IncompleteCommits) != 0 {
		t.Errorf("leftovers %v, incomplete %v", rep.Leftovers, rep.IncompleteCommits)
	}
	rep = f.fsck(repo.FsckOptions{})
	f.mustClean(rep)
	if rep.SignaturesVerified {
		t.Error("signatures reported verified without a trust store")
	}
}

func TestFsckCorruptContentObjectRepair(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a"), "etc/b": content("b")})
	bad := fsverity.DigestBytes([]byte(content("a")))
	path := f.r.Objects.Path(bad)
	corrupt(t, path)
	tampered, _ := os.ReadFile(path)

	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	p := oneProblem(t, rep, repo.ProblemCorruptObject)
	if *p.Object != bad || p.Path != "objects/"+bad.ObjectPath() || !errors.Is(p.Err, objstore.ErrCorrupt) {
		t.Errorf("corrupt-object problem %+v, want object %s", p, bad)
	}
	inc := oneProblem(t, rep, repo.ProblemIncompleteCommit)
	if *inc.Commit != res.Commit || !slices.Equal(inc.Refs, []string{"os/x86_64/stable"}) {
		t.Errorf("incomplete-commit problem %+v, want commit %s of ref os/x86_64/stable", inc, res.Commit)
	}
	if len(rep.Problems) != 2 {
		t.Errorf("problems %v, want exactly corrupt-object and incomplete-commit", rep.Problems)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("fsck without --repair touched the object: %v", err)
	}

	rep = f.fsck(repo.FsckOptions{Trust: f.trust, Repair: true})
	q := filepath.Join(f.r.Path(), repo.QuarantineDir, "objects", filepath.FromSlash(bad.ObjectPath()))
	if got, err := os.ReadFile(q); err != nil || string(got) != string(tampered) {
		t.Fatalf("quarantined copy %s: %v (content kept: %v)", q, err, string(got) == string(tampered))
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt object still served: %v", err)
	}
	if !slices.Equal(rep.Quarantined, []string{"quarantine/objects/" + bad.ObjectPath()}) {
		t.Errorf("quarantined %v", rep.Quarantined)
	}
	if !slices.Equal(rep.IncompleteCommits, []commit.ID{res.Commit}) {
		t.Errorf("incomplete commits %v, want %s", rep.IncompleteCommits, res.Commit)
	}
	if p := oneProblem(t, rep, repo.ProblemCorruptObject); p.Repair == "" {
		t.Errorf("repair not reported: %+v", p)
	}

	// Afterwards the object is missing, no longer corrupt.
	rep = f.fsck(repo.FsckOptions{Trust: f.trust})
	if len(rep.Find(repo.ProblemCorruptObject)) != 0 {
		t.Errorf("still corrupt after repair: %v", rep.Problems)
	}
	if p := oneProblem(t, rep, repo.ProblemMissingObject); *p.Object != bad || *p.Commit != res.Commit {
		t.Errorf("missing-object problem %+v", p)
	}
	oneProblem(t, rep, repo.ProblemIncompleteCommit)
}

func TestFsckImageObjectRestored(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	path := f.r.Objects.Path(res.ImageDigest)
	corrupt(t, path)

	_, err := f.r.VerifyCommit(context.Background(), res.Commit, f.trust)
	var ce *objstore.CorruptObjectError
	if !errors.As(err, &ce) || ce.Digest != res.ImageDigest {
		t.Fatalf("VerifyCommit with a corrupt image object: %v, want a CorruptObjectError for %s", err, res.ImageDigest)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	if p := oneProblem(t, rep, repo.ProblemCorruptObject); *p.Object != res.ImageDigest {
		t.Errorf("corrupt-object %+v, want the image %s", p, res.ImageDigest)
	}
	oneProblem(t, rep, repo.ProblemIncompleteCommit)

	rep = f.fsck(repo.FsckOptions{Trust: f.trust, Repair: true})
	if p := oneProblem(t, rep, repo.ProblemCorruptObject); p.Repair == "" {
		t.Errorf("no repair reported: %+v", p)
	}
	if len(rep.IncompleteCommits) != 0 {
		t.Errorf("image not restored: incomplete %v, problems %v", rep.IncompleteCommits, rep.Problems)
	}
	f.mustClean(f.fsck(repo.FsckOptions{Trust: f.trust}))
	if _, err := f.r.VerifyCommit(context.Background(), res.Commit, f.trust); err != nil {
		t.Fatalf("restored image does not verify: %v", err)
	}
}

func TestFsckCorruptDump(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	corrupt(t, f.r.Objects.Path(res.DumpDigest))

	_, err := f.r.VerifyCommit(context.Background(), res.Commit, f.trust)
	var ce *objstore.CorruptObjectError
	if !errors.As(err, &ce) || ce.Digest != res.DumpDigest {
		t.Fatalf("VerifyCommit with a corrupt dump: %v, want a CorruptObjectError for the dump %s", err, res.DumpDigest)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	if p := oneProblem(t, rep, repo.ProblemCorruptObject); *p.Object != res.DumpDigest {
		t.Errorf("corrupt-object %+v, want the dump %s", p, res.DumpDigest)
	}
	if p := oneProblem(t, rep, repo.ProblemIncompleteCommit); *p.Commit != res.Commit {
		t.Errorf("incomplete-commit %+v", p)
	}
}

func TestFsckSignatures(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	sigPath := filepath.Join(f.r.Path(), repo.CommitsDir, res.Commit.String()+".sig")

	// A trust store of another key: unknown key.
	// Both the commit's signature and the summary's are refused.
	_, other := newSigner(t)
	ps := f.fsck(repo.FsckOptions{Trust: other}).Find(repo.ProblemBadSignature)
	if len(ps) != 2 || *ps[0].Commit != res.Commit || ps[1].Path != repo.SummaryFile {
		t.Fatalf("untrusted signer: %v, want the commit's and the summary's signature refused", ps)
	}
	for _, p := range ps {
		if !errors.Is(p.Err, sign.ErrUnknownKey) {
			t.Errorf("untrusted signer: %+v, want ErrUnknownKey", p)
		}
	}

	// Flip a bit of the signature itself.
	raw, err := os.ReadFile(sigPath)
	if err != nil {
		t.Fatal(err)
	}
	env, err := sign.ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	env.Signatures[0].Sig[3] ^= 0x10
	out, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	p := oneProblem(t, rep, repo.ProblemBadSignature)
	if !errors.Is(p.Err, sign.ErrBadSignature) || p.Path != "commits/"+res.Commit.String()+".sig" {
		t.Errorf("flipped signature: %+v, want ErrBadSignature", p)
	}
	if len(rep.Problems) != 1 {
		t.Errorf("problems %v, want only the signature", rep.Problems)
	}
	// Without a trust store the signature is only checked for form.
	f.mustClean(f.fsck(repo.FsckOptions{}))

	// A signature over other bytes is caught even without a trust store.
	env.Payload = append([]byte(nil), env.Payload...)
	env.Payload[10] ^= 0x01
	if out, err = env.Marshal(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := oneProblem(t, f.fsck(repo.FsckOptions{}), repo.ProblemBadSignature); !errors.Is(p.Err, repo.ErrPayloadMismatch) {
		t.Errorf("signature over other bytes: %+v, want ErrPayloadMismatch", p)
	}
}

func TestFsckCorruptCommitRepair(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	cpath := filepath.Join(f.r.Path(), repo.CommitsDir, res.Commit.String()+".commit")
	corrupt(t, cpath)

	if _, err := f.r.VerifyCommit(context.Background(), res.Commit, f.trust); !errors.Is(err, repo.ErrCorruptCommit) {
		t.Fatalf("VerifyCommit of a tampered commit: %v, want ErrCorruptCommit", err)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	p := oneProblem(t, rep, repo.ProblemCorruptCommit)
	if !errors.Is(p.Err, repo.ErrCorruptCommit) || *p.Commit != res.Commit || !slices.Equal(p.Refs, []string{"os/x86_64/stable"}) {
		t.Errorf("corrupt-commit %+v", p)
	}

	rep = f.fsck(repo.FsckOptions{Trust: f.trust, Repair: true})
	want := []string{"quarantine/commits/" + res.Commit.String() + ".commit", "quarantine/commits/" + res.Commit.String() + ".sig"}
	if !slices.Equal(rep.Quarantined, want) {
		t.Errorf("quarantined %v, want %v", rep.Quarantined, want)
	}
	// The ref now names a commit that is not stored.
	if p := oneProblem(t, rep, repo.ProblemDanglingRef); *p.Commit != res.Commit || p.Path != "refs/os/x86_64/stable" {
		t.Errorf("dangling-ref %+v", p)
	}
}

func TestFsckImageMismatch(t *testing.T) {
	f := newFixture(t)
	a := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	b := f.build("os/x86_64/other", map[string]string{"etc/b": content("b")})
	// A commit signing b's image digest with a's dump: the dump
	// regenerates a's image, not the signed one.
	m, _, err := f.r.ReadCommit(a.Commit)
	if err != nil {
		t.Fatal(err)
	}
	m.Image.Digest = b.ImageDigest
	m.Ref = "os/x86_64/evil"
	canonical, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	env, err := sign.Sign(context.Background(), commit.PayloadType, canonical, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	id, err := f.r.WriteCommit(canonical, raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.VerifyCommit(context.Background(), id, f.trust); !errors.Is(err, repo.ErrImageMismatch) {
		t.Errorf("VerifyCommit: %v, want ErrImageMismatch", err)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	if p := oneProblem(t, rep, repo.ProblemImageMismatch); *p.Commit != id || !errors.Is(p.Err, repo.ErrImageMismatch) {
		t.Errorf("image-mismatch %+v", p)
	}
	if len(rep.Problems) != 1 {
		t.Errorf("problems %v", rep.Problems)
	}
}

func TestFsckMissingObjectDanglingRefStaleSummary(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a"), "etc/b": content("b")})
	gone := fsverity.DigestBytes([]byte(content("b")))
	if err := f.r.Objects.Remove(gone); err != nil {
		t.Fatal(err)
	}
	ghost := commit.ID{1, 2, 3}
	refFile := filepath.Join(f.r.Path(), repo.RefsDir, "os", "ghost")
	if err := os.WriteFile(refFile, []byte(ghost.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust})
	if p := oneProblem(t, rep, repo.ProblemMissingObject); *p.Object != gone || *p.Commit != res.Commit {
		t.Errorf("missing-object %+v, want %s of %s", p, gone, res.Commit)
	}
	if p := oneProblem(t, rep, repo.ProblemDanglingRef); *p.Commit != ghost || p.Path != "refs/os/ghost" {
		t.Errorf("dangling-ref %+v", p)
	}
	// The summary does not list os/ghost: a warning, not a problem.
	if len(rep.Warnings) != 1 || rep.Warnings[0].Kind != repo.ProblemStaleSummary || !strings.Contains(rep.Warnings[0].Detail, "os/ghost not listed") {
		t.Errorf("warnings %v, want a stale summary missing os/ghost", rep.Warnings)
	}
	if len(rep.Problems) != 3 {
		t.Errorf("problems %v, want missing-object, incomplete-commit, dangling-ref", rep.Problems)
	}
	if !slices.Equal(rep.IncompleteCommits, []commit.ID{res.Commit}) {
		t.Errorf("incomplete %v", rep.IncompleteCommits)
	}
}

func TestFsckStrayAndNonRegular(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	obj := res.DumpDigest
	// Replace the dump object by a symlink to a copy of itself: named
	// right, content right, but not a regular file.
	p := f.r.Objects.Path(obj)
	cp := filepath.Join(t.TempDir(), "copy")
	b, _ := os.ReadFile(p)
	os.WriteFile(cp, b, 0o644)
	os.Remove(p)
	if err := os.Symlink(cp, p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.r.Objects.Dir(), obj.String()[:2], "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := f.fsck(repo.FsckOptions{})
	if p := oneProblem(t, rep, repo.ProblemCorruptObject); *p.Object != obj {
		t.Errorf("symlinked object: %+v", p)
	}
	if p := oneProblem(t, rep, repo.ProblemStrayFile); p.Path != "objects/"+obj.String()[:2]+"/README" {
		t.Errorf("stray file: %+v", p)
	}
}

func TestFsckLeftovers(t *testing.T) {
	f := newFixture(t)
	res := f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	root := f.r.Path()
	orphan := commit.ID{9}
	files := []string{
		"tmp/staging-1",
		"objects/.tmp-123",
		"commits/." + res.Commit.String() + ".sig.tmp-4",
		"commits/" + orphan.String() + ".sig",
		"refs/os/x86_64/.stable.tmp-5",
		".summary.tmp-6",
		"cache/.digests.tmp-7",
	}
	for _, p := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte("leftover"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(rep *repo.FsckReport, removed bool) {
		t.Helper()
		f.mustClean(rep)
		var got []string
		for _, l := range rep.Leftovers {
			got = append(got, l.Path)
			if l.Size != int64(len("leftover")) || l.Removed != removed {
				t.Errorf("leftover %+v, want size 8, removed %v", l, removed)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(files))
		if !slices.Equal(got, want) {
			t.Errorf("leftovers %v, want %v", got, want)
		}
	}
	check(f.fsck(repo.FsckOptions{Trust: f.trust}), false)

	// A running writer (holding the GC lock shared) keeps them.
	l, err := f.r.GCLock(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	rep := f.fsck(repo.FsckOptions{Trust: f.trust, Repair: true})
	check(rep, false)
	if rep.LeftoversKept == "" {
		t.Error("no reason given for keeping the leftovers")
	}
	l.Unlock()

	check(f.fsck(repo.FsckOptions{Trust: f.trust, Repair: true}), true)
	for _, p := range files {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", p, err)
		}
	}
	rep = f.fsck(repo.FsckOptions{Trust: f.trust})
	f.mustClean(rep)
	if len(rep.Leftovers) != 0 {
		t.Errorf("leftovers after repair: %v", rep.Leftovers)
	}
}

func TestFsckWaitsForPrune(t *testing.T) {
	f := newFixture(t)
	f.build("os/x86_64/stable", map[string]string{"etc/a": content("a")})
	// Prune holds the GC lock exclusively; fsck waits for it.
	l, err := lockfile.Exclusive(context.Background(), filepath.Join(f.r.Path(), repo.LocksDir, "gc.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.r.Fsck(ctx, repo.FsckOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("fsck while the GC lock is held exclusively: %v, want it to wait (context.Canceled)", err)
	}
}
