package repo_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// graph is an in-memory commit graph for Reachable: commit i has objects
// {i*10, i*10+1} and the parent given.
type graph map[commit.ID]*repo.CommitNode

func cid(i byte) commit.ID { return commit.ID{i} }

func obj(i int) fsverity.Digest { return fsverity.Digest{byte(i), byte(i >> 8)} }

func (g graph) add(i byte, parent int) {
	n := &repo.CommitNode{Objects: []fsverity.Digest{obj(int(i) * 10), obj(int(i)*10 + 1)}}
	if parent > 0 {
		p := cid(byte(parent))
		n.Parent = &p
	}
	g[cid(i)] = n
}

func (g graph) lookup(id commit.ID) (*repo.CommitNode, error) {
	if n, ok := g[id]; ok {
		return n, nil
	}
	return nil, fmt.Errorf("%w: %s", repo.ErrCommitMissing, id)
}

func TestReachable(t *testing.T) {
	// 1 ← 2 ← 3 ← 4 (ref a); 2 ← 5 (ref b); 6 alone (ref c, parent 7
	// already pruned).
	g := graph{}
	g.add(1, 0)
	g.add(2, 1)
	g.add(3, 2)
	g.add(4, 3)
	g.add(5, 2)
	g.add(6, 7)
	refs := []repo.Ref{{Name: "a", Commit: cid(4)}, {Name: "b", Commit: cid(5)}, {Name: "c", Commit: cid(6)}}
	for _, tc := range []struct {
		keep    int
		refs    []repo.Ref
		commits []byte
	}{
		{1, refs, []byte{4, 5, 6}},
		{2, refs, []byte{2, 3, 4, 5, 6}},
		{3, refs, []byte{1, 2, 3, 4, 5, 6}},
		{100, refs, []byte{1, 2, 3, 4, 5, 6}},
		// Ref b reaches 2 at depth 2 after a reached it at depth 3:
		// walked again, so 1 is kept too.
		{3, []repo.Ref{{Name: "a", Commit: cid(4)}, {Name: "b", Commit: cid(5)}}, []byte{1, 2, 3, 4, 5}},
		{2, []repo.Ref{{Name: "a", Commit: cid(4)}, {Name: "b2", Commit: cid(2)}}, []byte{1, 2, 3, 4}},
		{1, nil, nil},
	} {
		m, err := repo.Reachable(tc.refs, tc.keep, g.lookup)
		if err != nil {
			t.Fatalf("keep %d: %v", tc.keep, err)
		}
		var want []commit.ID
		wantObjs := map[fsverity.Digest]struct{}{}
		for _, i := range tc.commits {
			want = append(want, cid(i))
			wantObjs[obj(int(i)*10)] = struct{}{}
			wantObjs[obj(int(i)*10+1)] = struct{}{}
		}
		got := slices.SortedFunc(maps.Keys(m.Commits), func(a, b commit.ID) int { return int(a[0]) - int(b[0]) })
		if !slices.Equal(got, want) {
			t.Errorf("keep %d, refs %v: commits %v, want %v", tc.keep, tc.refs, got, want)
		}
		if !maps.Equal(m.Objects, wantObjs) {
			t.Errorf("keep %d: %d objects marked, want %d", tc.keep, len(m.Objects), len(wantObjs))
		}
	}
}

func TestReachableFailsClosed(t *testing.T) {
	g := graph{}
	g.add(1, 0)
	g.add(2, 1)
	if _, err := repo.Reachable([]repo.Ref{{Name: "a", Commit: cid(2)}}, 0, g.lookup); !errors.Is(err, repo.ErrKeep) {
		t.Errorf("keep 0: %v, want ErrKeep", err)
	}
	// A ref naming a missing commit.
	_, err := repo.Reachable([]repo.Ref{{Name: "a", Commit: cid(2)}, {Name: "ghost", Commit: cid(9)}}, 1, g.lookup)
	if !errors.Is(err, repo.ErrCommitMissing) {
		t.Errorf("dangling ref: %v, want ErrCommitMissing", err)
	}
	// A parent that cannot be read (other than missing).
	boom := errors.New("boom")
	lookup := func(id commit.ID) (*repo.CommitNode, error) {
		if id == cid(1) {
			return nil, boom
		}
		return g.lookup(id)
	}
	if _, err := repo.Reachable([]repo.Ref{{Name: "a", Commit: cid(2)}}, 2, lookup); !errors.Is(err, boom) {
		t.Errorf("unreadable parent: %v, want it reported", err)
	}
	// A cycle (impossible with real hashes) terminates.
	g.add(3, 4)
	g.add(4, 3)
	m, err := repo.Reachable([]repo.Ref{{Name: "a", Commit: cid(3)}}, 1000, g.lookup)
	if err != nil || len(m.Commits) != 2 {
		t.Errorf("cycle: %v, %v", m, err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestPrune(t *testing.T) {
	f := newFixture(t)
	shared := content("shared")
	c1 := f.build("os/a", map[string]string{"shared": shared, "only1": content("one")})
	c2 := f.build("os/a", map[string]string{"shared": shared, "only2": content("two")})
	c3 := f.build("os/a", map[string]string{"shared": shared, "only3": content("three")})
	c4 := f.build("os/b", map[string]string{"shared": shared, "b": content("b")})
	// A leftover of an interrupted build.
	leftover := filepath.Join(f.r.Path(), repo.TmpDir, "staging")
	os.WriteFile(leftover, []byte("partial"), 0o644)

	// keep 2: c1 goes, with the objects only it needs.
	gone := []fsverity.Digest{fsverity.DigestBytes([]byte(content("one"))), c1.DumpDigest, c1.ImageDigest}
	slices.SortFunc(gone, func(a, b fsverity.Digest) int { return slices.Compare(a[:], b[:]) })
	var goneBytes int64
	for _, d := range gone {
		st, err := os.Stat(f.r.Objects.Path(d))
		if err != nil {
			t.Fatal(err)
		}
		goneBytes += st.Size()
	}
	var commitBytes int64
	for _, ext := range []string{".commit", ".sig"} {
		st, err := os.Stat(filepath.Join(f.r.Path(), repo.CommitsDir, c1.Commit.String()+ext))
		if err != nil {
			t.Fatal(err)
		}
		commitBytes += st.Size()
	}
	beforeObjs, _ := countObjects(t, f.r)

	dry, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 2, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	check := func(rep *repo.PruneReport) {
		t.Helper()
		if !slices.Equal(rep.Commits, []commit.ID{c1.Commit}) {
			t.Errorf("commits %v, want %s", rep.Commits, c1.Commit)
		}
		if !slices.Equal(rep.Objects, gone) {
			t.Errorf("objects %v, want %v", rep.Objects, gone)
		}
		if rep.ObjectBytes != goneBytes || rep.BytesFreed != goneBytes+commitBytes+int64(len("partial")) {
			t.Errorf("bytes: objects %d (want %d), freed %d (want %d)", rep.ObjectBytes, goneBytes, rep.BytesFreed, goneBytes+commitBytes+7)
		}
		if len(rep.Leftovers) != 1 || rep.Leftovers[0].Path != "tmp/staging" {
			t.Errorf("leftovers %v", rep.Leftovers)
		}
		if rep.KeptCommits != 3 || int64(rep.KeptObjects) != beforeObjs-3 {
			t.Errorf("kept %d commits and %d objects, want 3 and %d", rep.KeptCommits, rep.KeptObjects, beforeObjs-3)
		}
	}
	check(dry)
	if n, _ := countObjects(t, f.r); n != beforeObjs || !f.r.HasCommit(c1.Commit) || !exists(leftover) {
		t.Fatalf("dry run removed something: %d objects (had %d), commit kept %v", n, beforeObjs, f.r.HasCommit(c1.Commit))
	}

	rep, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	check(rep)
	if f.r.HasCommit(c1.Commit) || exists(filepath.Join(f.r.Path(), repo.CommitsDir, c1.Commit.String()+".sig")) {
		t.Error("c1 or its signature still stored")
	}
	for _, d := range gone {
		if exists(f.r.Objects.Path(d)) {
			t.Errorf("object %s still stored", d)
		}
	}
	if exists(leftover) {
		t.Error("leftover not removed")
	}
	if n, _ := countObjects(t, f.r); n != beforeObjs-3 {
		t.Errorf("%d objects left, want %d", n, beforeObjs-3)
	}
	for _, c := range []commit.ID{c2.Commit, c3.Commit, c4.Commit} {
		if _, err := f.r.VerifyCommit(context.Background(), c, f.trust); err != nil {
			t.Errorf("kept commit %s: %v", c, err)
		}
	}
	f.mustClean(f.fsck(repo.FsckOptions{Trust: f.trust}))

	// keep 1: c2 goes too; the object all commits share stays.
	rep, err = f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Commits, []commit.ID{c2.Commit}) || len(rep.Objects) != 3 {
		t.Errorf("keep 1: removed %v and %d objects, want %s and 3", rep.Commits, len(rep.Objects), c2.Commit)
	}
	if !exists(f.r.Objects.Path(fsverity.DigestBytes([]byte(shared)))) {
		t.Error("shared object removed")
	}
	f.mustClean(f.fsck(repo.FsckOptions{Trust: f.trust}))

	// Nothing left to prune.
	rep, err = f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1})
	if err != nil || len(rep.Commits)+len(rep.Objects)+len(rep.Leftovers) != 0 || rep.BytesFreed != 0 {
		t.Errorf("second prune: %+v, %v", rep, err)
	}
	if _, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 0}); !errors.Is(err, repo.ErrKeep) {
		t.Errorf("keep 0: %v, want ErrKeep", err)
	}
}

func TestPruneWaitsForBuilds(t *testing.T) {
	f := newFixture(t)
	f.build("os/a", map[string]string{"x": content("1")})
	f.build("os/a", map[string]string{"x": content("2")})
	// A running build holds the GC lock shared.
	l, err := f.r.GCLock(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := f.r.Prune(ctx, repo.PruneOptions{Keep: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prune while a build holds the GC lock: %v, want it to wait", err)
	}
	ids, _ := f.r.Commits()
	if len(ids) != 2 {
		t.Fatalf("prune that waited removed commits: %d left", len(ids))
	}
	l.Unlock()
	rep, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1})
	if err != nil || len(rep.Commits) != 1 {
		t.Fatalf("prune after the build: %+v, %v", rep, err)
	}
}

func TestPruneFailsClosed(t *testing.T) {
	f := newFixture(t)
	a := f.build("os/a", map[string]string{"x": content("1")})
	f.build("os/a", map[string]string{"x": content("2")})
	before, _ := countObjects(t, f.r)

	// A dangling ref: nothing pruned.
	ghost := commit.ID{7}
	refFile := filepath.Join(f.r.Path(), repo.RefsDir, "os", "ghost")
	os.WriteFile(refFile, []byte(ghost.String()+"\n"), 0o644)
	if _, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1}); !errors.Is(err, repo.ErrCommitMissing) {
		t.Fatalf("prune with a dangling ref: %v, want ErrCommitMissing", err)
	}
	if n, _ := countObjects(t, f.r); n != before || !f.r.HasCommit(a.Commit) {
		t.Fatal("failed prune removed something")
	}
	os.Remove(refFile)

	// A kept commit whose dump is corrupt: its objects are listed from
	// its (intact) image instead and kept.
	c := f.build("os/b", map[string]string{"y": content("y")})
	corrupt(t, f.r.Objects.Path(c.DumpDigest))
	if _, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1}); err != nil {
		t.Fatalf("prune with a corrupt dump: %v", err)
	}
	if !exists(f.r.Objects.Path(fsverity.DigestBytes([]byte(content("y"))))) {
		t.Error("content object of the commit with a corrupt dump removed")
	}
	// Dump and image both unusable: refuse.
	corrupt(t, f.r.Objects.Path(c.ImageDigest))
	if _, err := f.r.Prune(context.Background(), repo.PruneOptions{Keep: 1}); err == nil {
		t.Fatal("prune with neither dump nor image readable succeeded")
	}
}
