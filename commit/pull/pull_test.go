package pull

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/builder"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

func signer(t *testing.T) (*sign.Signer, *sign.TrustStore) {
	t.Helper()
	priv, pub, err := sign.Keygen("", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.ParseSigner(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := sign.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := sign.NewTrustStore([]*sign.PublicKey{pk}, nil, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s, trust
}

// buildRepo builds one small commit on ref "os/stable" into a new
// repository.
func buildRepo(t *testing.T, s *sign.Signer, files map[string]string) (*repo.Repo, commit.ID) {
	t.Helper()
	r, err := repo.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := builder.Build(context.Background(), r, builder.Source{Dir: dir}, builder.Options{
		Ref: "os/stable", Timestamp: 1700000000, Signers: []*sign.Signer{s},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, res.Commit
}

var testFiles = map[string]string{
	"usr/bin/a":  strings.Repeat("a", 1000),
	"usr/bin/b":  strings.Repeat("b", 5000),
	"usr/bin/b2": strings.Repeat("b", 5000), // same object as b
	"etc/small":  "inline",
}

func TestPullCopiesEverything(t *testing.T) {
	s, trust := signer(t)
	src, id := buildRepo(t, s, testFiles)
	dst, err := repo.Init(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := Pull(ctx, dst, src.Path(), "os/stable", Options{Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	// 2 content objects (b and b2 share one), plus the dump and the image.
	if res.Commit != id || res.Objects != 2 || res.Fetched != 4 || len(res.KeyIDs) != 1 {
		t.Errorf("result %+v", res)
	}
	if got, err := dst.ReadRef("os/stable"); err != nil || got != id {
		t.Errorf("ref: %s %v", got, err)
	}
	var n int
	if err := dst.Objects.Walk(ctx, func(d fsverity.Digest) error {
		n++
		return dst.Objects.Verify(ctx, d)
	}); err != nil || n != 4 {
		t.Errorf("objects: %d, %v", n, err)
	}
	if _, err := dst.ReadSignature(id); err != nil {
		t.Error(err)
	}
}

func TestPullRefusesBeforeCopying(t *testing.T) {
	s, _ := signer(t)
	_, otherTrust := signer(t)
	src, _ := buildRepo(t, s, testFiles)
	dst, _ := repo.Init(filepath.Join(t.TempDir(), "dst"))
	_, err := Pull(context.Background(), dst, src.Path(), "os/stable", Options{Trust: otherTrust})
	if !errors.Is(err, ErrVerification) || !errors.Is(err, sign.ErrUnknownKey) {
		t.Fatalf("untrusted pull: %v", err)
	}
	var n int
	dst.Objects.Walk(context.Background(), func(fsverity.Digest) error { n++; return nil })
	ids, _ := dst.Commits()
	if n != 0 || len(ids) != 0 {
		t.Errorf("refused pull copied %d objects, %d commits", n, len(ids))
	}
	if _, err := Pull(context.Background(), dst, src.Path(), "os/stable", Options{}); err == nil {
		t.Error("pull without a trust store succeeded")
	}
}

func TestVerifyCommitPayloadMustBeTheMetadata(t *testing.T) {
	s, trust := signer(t)
	src, id := buildRepo(t, s, testFiles)
	_, canonical, err := src.ReadCommit(id)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := src.ReadSignature(id)
	if _, err := VerifyCommit(canonical, env, trust); err != nil {
		t.Fatal(err)
	}
	// A valid signature over other bytes does not vouch for this commit.
	other, err := sign.Sign(context.Background(), commit.PayloadType, []byte("something else\n"), s)
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := other.Marshal()
	if _, err := VerifyCommit(canonical, ob, trust); !errors.Is(err, ErrVerification) {
		t.Errorf("signature over other bytes: %v", err)
	}
	if _, err := VerifyCommit(canonical, nil, trust); !errors.Is(err, sign.ErrNoSignature) {
		t.Errorf("no envelope: %v", err)
	}
	if _, err := VerifyCommit(canonical, []byte("{"), trust); !errors.Is(err, ErrVerification) {
		t.Errorf("malformed envelope: %v", err)
	}
}

func TestReadTreeChecksDigest(t *testing.T) {
	s, _ := signer(t)
	src, id := buildRepo(t, s, testFiles)
	m, _, _ := src.ReadCommit(id)
	ctx := context.Background()
	if _, err := ReadTree(ctx, src.Objects, m.Dump); err != nil {
		t.Fatal(err)
	}
	wrongSize := m.Dump
	wrongSize.Size++
	if _, err := ReadTree(ctx, src.Objects, wrongSize); !errors.Is(err, ErrVerification) {
		t.Errorf("wrong size: %v", err)
	}
	missing := m.Dump
	missing.Digest[0] ^= 1
	if _, err := ReadTree(ctx, src.Objects, missing); !errors.Is(err, ErrMissingObject) {
		t.Errorf("missing dump: %v", err)
	}
	p := src.Objects.Path(m.Dump.Digest)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(b, []byte("usr"), []byte("uss"), 1), 0o644)
	var dm *DigestMismatchError
	if _, err := ReadTree(ctx, src.Objects, m.Dump); !errors.As(err, &dm) || dm.Expected != m.Dump.Digest {
		t.Errorf("tampered dump: %v", err)
	}
}

func TestTreeObjectsRejectsForeignPayloads(t *testing.T) {
	d := fsverity.DigestBytes([]byte("x"))
	other := fsverity.DigestBytes([]byte("y"))
	mk := func(payload string, digest *fsverity.Digest) *composefs.Node {
		root := composefs.NewNode("", composefs.TypeDir|0o755)
		f := composefs.NewNode("f", composefs.TypeRegular|0o644)
		f.Size, f.Payload, f.Digest = 100, payload, digest
		root.AddChild(f)
		return root
	}
	if objs, err := TreeObjects(mk(d.ObjectPath(), &d)); err != nil || objs[d] != 100 {
		t.Errorf("good tree: %v %v", objs, err)
	}
	for name, root := range map[string]*composefs.Node{
		"not an object path": mk("/etc/passwd", nil),
		"digest disagrees":   mk(d.ObjectPath(), &other),
	} {
		if _, err := TreeObjects(root); !errors.Is(err, composefs.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestVerifyObjects(t *testing.T) {
	store, err := objstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ds []fsverity.Digest
	for i := 0; i < 20; i++ {
		d, _, err := store.Insert(ctx, strings.NewReader(strings.Repeat(string(rune('a'+i)), 200)))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := VerifyObjects(ctx, store, ds, 3); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(store.Path(ds[7]), []byte("tampered"), 0o644)
	if err := VerifyObjects(ctx, store, ds, 3); !errors.Is(err, ErrVerification) || !errors.Is(err, objstore.ErrCorrupt) {
		t.Errorf("tampered: %v", err)
	}
	os.Remove(store.Path(ds[7]))
	if err := VerifyObjects(ctx, store, ds, 3); !errors.Is(err, ErrMissingObject) {
		t.Errorf("missing: %v", err)
	}
}

func TestForEach(t *testing.T) {
	var calls atomic.Int64
	if err := ForEach(context.Background(), 4, 100, func(context.Context, int) error { calls.Add(1); return nil }); err != nil || calls.Load() != 100 {
		t.Errorf("calls %d, %v", calls.Load(), err)
	}
	boom := errors.New("boom")
	calls.Store(0)
	err := ForEach(context.Background(), 1, 100, func(_ context.Context, i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls.Load() != 11 {
		t.Errorf("after an error: %d calls, %v", calls.Load(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ForEach(ctx, 2, 5, func(context.Context, int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if err := ForEach(context.Background(), 2, 0, nil); err != nil {
		t.Errorf("nothing to do: %v", err)
	}
}
