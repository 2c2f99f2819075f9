package etcmerge

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cfs-dev/cfs/internal/testutil"
)

// Every tree gets its own default time, so that the expected result says
// from which side each object (and its mtime) must come.
var (
	tOld = time.Unix(1_600_000_000, 111_000_000)
	tCur = time.Unix(1_650_000_000, 222_000_000)
	tNew = time.Unix(1_700_000_000, 333_000_000)
)

// base is the /etc most cases start from.
var base = tree{
	".":        dir(),
	"a.conf":   file("a=1\n"),
	"b.conf":   file("b=1\n"),
	"d":        dir(),
	"d/x.conf": file("x=1\n"),
	"d/z.conf": file("z=1\n"),
	"l":        link("a.conf"),
}

type mergeCase struct {
	name      string
	root      bool // needs root (other owners, trusted.*/security.* xattrs, device nodes)
	old, cur  tree
	new       tree
	opts      Options
	want      func(o, c, n tree) tree // from the resolved inputs
	report    Report
	outsideOK func(t *testing.T, dir string) // extra checks on the test's directory
}

func mergeCases() []mergeCase {
	same := func(_, _, n tree) tree { return n }
	return []mergeCase{
		{
			name: "unchanged (only timestamps differ)",
			old:  base, cur: base, new: base,
			want: same,
		},
		{
			name: "added locally",
			old:  base, cur: base.with("new.conf", file("local\n").perm(0o600)), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "new.conf") },
			report: Report{Added: []string{"new.conf"}},
		},
		{
			name: "modified locally",
			old:  base, cur: base.with("a.conf", file("a=2\n")), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name: "modified locally, same size",
			old:  base, cur: base.with("d/x.conf", file("x=9\n")), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "d/x.conf") },
			report: Report{Modified: []string{"d/x.conf"}},
		},
		{
			name: "deleted locally",
			old:  base, cur: base.without("b.conf"), new: base,
			want:   func(o, c, n tree) tree { return n.without("b.conf") },
			report: Report{Deleted: []string{"b.conf"}},
		},
		{
			name: "directory deleted locally",
			old:  base, cur: base.without("d"), new: base.with("d/new-upstream", file("u\n")),
			want:   func(o, c, n tree) tree { return n.without("d") },
			report: Report{Deleted: []string{"d"}, Conflicts: []string{"d"}},
		},
		{
			name: "changed upstream only",
			old:  base, cur: base, new: base.with("a.conf", file("a=upstream\n"), "new-upstream.conf", file("n\n")),
			want: same,
		},
		{
			name: "changed both: local wins, conflict",
			old:  base, cur: base.with("a.conf", file("a=local\n")), new: base.with("a.conf", file("a=upstream\n")),
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}, Conflicts: []string{"a.conf"}},
		},
		{
			name: "changed both identically: no conflict",
			old:  base, cur: base.with("a.conf", file("a=2\n")), new: base.with("a.conf", file("a=2\n")),
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name: "deleted upstream, unchanged locally: gone",
			old:  base, cur: base, new: base.without("a.conf", "d"),
			want: same,
		},
		{
			name: "deleted upstream, modified locally: kept, conflict",
			old:  base, cur: base.with("a.conf", file("a=local\n")), new: base.without("a.conf"),
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}, Conflicts: []string{"a.conf"}},
		},
		{
			name: "deleted locally, changed upstream: stays deleted, conflict",
			old:  base, cur: base.without("a.conf"), new: base.with("a.conf", file("a=upstream\n")),
			want:   func(o, c, n tree) tree { return n.without("a.conf") },
			report: Report{Deleted: []string{"a.conf"}, Conflicts: []string{"a.conf"}},
		},
		{
			name: "deleted on both sides",
			old:  base, cur: base.without("a.conf"), new: base.without("a.conf"),
			want:   same,
			report: Report{Deleted: []string{"a.conf"}},
		},
		{
			name: "added on both sides, differently",
			old:  base, cur: base.with("c.conf", file("local\n")), new: base.with("c.conf", file("upstream\n")),
			want:   func(o, c, n tree) tree { return pick(n, c, "c.conf") },
			report: Report{Added: []string{"c.conf"}, Conflicts: []string{"c.conf"}},
		},
		{
			name: "added on both sides, identically",
			old:  base, cur: base.with("c.conf", file("same\n")), new: base.with("c.conf", file("same\n")),
			want:   func(o, c, n tree) tree { return pick(n, c, "c.conf") },
			report: Report{Added: []string{"c.conf"}},
		},
		{
			name: "permissions change only (file)",
			old:  base, cur: base.with("a.conf", file("a=1\n").perm(0o600)), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name: "setuid, setgid and sticky bits",
			old:  base, cur: base.with("a.conf", file("a=1\n").perm(0o6755), "d", dir().perm(0o1777)), new: base,
			want:   func(o, c, n tree) tree { return pickNode(n, c, "a.conf", "d") },
			report: Report{Modified: []string{"a.conf", "d"}},
		},
		{
			name: "permissions change only (directory), upstream changes inside",
			old:  base, cur: base.with("d", dir().perm(0o700)),
			new:    base.with("d/new-upstream.conf", file("u\n"), "d/x.conf", file("x=2\n")),
			want:   func(o, c, n tree) tree { return pickNode(n, c, "d") },
			report: Report{Modified: []string{"d"}},
		},
		{
			name: "directory permissions changed on both sides",
			old:  base, cur: base.with("d", dir().perm(0o700)), new: base.with("d", dir().perm(0o750)),
			want:   func(o, c, n tree) tree { return pickNode(n, c, "d") },
			report: Report{Modified: []string{"d"}, Conflicts: []string{"d"}},
		},
		{
			name: "root directory metadata changed",
			old:  base, cur: base.with(".", dir().perm(0o750)), new: base,
			want:   func(o, c, n tree) tree { return pickNode(n, c, ".") },
			report: Report{Modified: []string{"."}},
		},
		{
			name: "owner change only",
			root: true,
			old:  base, cur: base.with("a.conf", file("a=1\n").owner(1000, 1000), "d", dir().owner(0, 4)), new: base,
			want:   func(o, c, n tree) tree { return pickNode(n, c, "a.conf", "d") },
			report: Report{Modified: []string{"a.conf", "d"}},
		},
		{
			name: "symlink owner change only",
			root: true,
			old:  base, cur: base.with("l", link("a.conf").owner(7, 8)), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "l") },
			report: Report{Modified: []string{"l"}},
		},
		{
			name: "user xattr change only",
			old:  base, cur: base.with("a.conf", file("a=1\n").xattr("user.note", "mine")), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name:   "security.selinux change only",
			root:   true,
			old:    labeled(base),
			cur:    labeled(base).with("a.conf", file("a=1\n").xattr("security.selinux", "system_u:object_r:admin_home_t:s0")),
			new:    labeled(base),
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name:   "security.selinux change ignored by option (ostree behaviour)",
			root:   true,
			old:    labeled(base),
			cur:    labeled(base).with("a.conf", file("a=1\n").xattr("security.selinux", "system_u:object_r:admin_home_t:s0")),
			new:    labeled(base).with("b.conf", file("b=2\n").xattr("security.selinux", "system_u:object_r:etc_t:s0")),
			opts:   Options{IgnoreXattrs: []string{"security.selinux"}},
			want:   same,
			report: Report{},
		},
		{
			name: "ignored prefix still copied with the winner",
			root: true,
			old:  base, cur: base.with("a.conf", file("a=2\n").xattr("trusted.cache", "x")), new: base,
			opts:   Options{IgnoreXattrs: []string{"trusted."}},
			want:   func(o, c, n tree) tree { return pick(n, c, "a.conf") },
			report: Report{Modified: []string{"a.conf"}},
		},
		{
			name: "xattrs of every namespace are carried",
			root: true,
			old:  base,
			cur: base.with(
				"secure.conf", file("s\n").perm(0o640).owner(0, 42).
					xattr("user.a", "1").xattr("trusted.b", "2").xattr("security.selinux", "system_u:object_r:shadow_t:s0").
					xattr("security.capability", "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
				"tl", link("secure.conf").xattr("trusted.overlay.x", "y").xattr("security.selinux", "system_u:object_r:etc_t:s0"),
			),
			new:    base.with("up.conf", file("u\n").xattr("trusted.up", "1")),
			want:   func(o, c, n tree) tree { return pick(n, c, "secure.conf", "tl") },
			report: Report{Added: []string{"secure.conf", "tl"}},
		},
		{
			name: "symlink retargeted",
			old:  base, cur: base.with("l", link("d/x.conf")), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "l") },
			report: Report{Modified: []string{"l"}},
		},
		{
			name: "symlink retargeted on both sides",
			old:  base, cur: base.with("l", link("d/x.conf")), new: base.with("l", link("b.conf")),
			want:   func(o, c, n tree) tree { return pick(n, c, "l") },
			report: Report{Modified: []string{"l"}, Conflicts: []string{"l"}},
		},
		{
			name: "file replaced by directory locally, file changed upstream",
			old:  base,
			cur:  base.with("a.conf", dir().perm(0o750), "a.conf/10-local.conf", file("x\n")),
			new:  base.with("a.conf", file("a=upstream\n")),
			want: func(o, c, n tree) tree {
				return pick(n, c, "a.conf")
			},
			report: Report{Modified: []string{"a.conf"}, Conflicts: []string{"a.conf"}},
		},
		{
			name:   "directory replaced by file locally, directory changed upstream",
			old:    base,
			cur:    base.without("d").with("d", file("now a file\n")),
			new:    base.with("d/new-upstream.conf", file("u\n")),
			want:   func(o, c, n tree) tree { return pick(n, c, "d") },
			report: Report{Modified: []string{"d"}, Conflicts: []string{"d"}},
		},
		{
			name:   "directory replaced by symlink locally",
			old:    base,
			cur:    base.without("d").with("d", link("/usr/share/d")),
			new:    base,
			want:   func(o, c, n tree) tree { return pick(n, c, "d") },
			report: Report{Modified: []string{"d"}},
		},
		{
			name: "file replaced by directory upstream, unchanged locally",
			old:  base, cur: base, new: base.with("a.conf", dir(), "a.conf/x", file("x\n")),
			want: same,
		},
		{
			name: "nested new directories",
			old:  base,
			cur: base.with(
				"n1", dir().perm(0o750),
				"n1/n2", dir().perm(0o700),
				"n1/n2/n3", dir(),
				"n1/n2/n3/deep.conf", file("deep\n").perm(0o640),
				"n1/n2/l", link("n3/deep.conf"),
				"d/sub", dir(),
				"d/sub/new.conf", file("new\n"),
			),
			new:    base,
			want:   func(o, c, n tree) tree { return pick(n, c, "n1", "d/sub") },
			report: Report{Added: []string{"d/sub", "n1"}},
		},
		{
			name: "local change below a directory removed upstream",
			old:  base,
			cur:  base.with("d", dir().perm(0o750), "d/x.conf", file("x=local\n")),
			new:  base.without("d"),
			// d comes back with the local metadata; only the changed entry
			// returns, d/z.conf follows upstream.
			want: func(o, c, n tree) tree { return pickNode(n, c, "d", "d/x.conf") },
			report: Report{
				Modified:  []string{"d", "d/x.conf"},
				Conflicts: []string{"d", "d/x.conf"},
			},
		},
		{
			name:   "local change below a directory removed upstream, directory itself unchanged",
			old:    base,
			cur:    base.with("d/x.conf", file("x=local\n")),
			new:    base.without("d"),
			want:   func(o, c, n tree) tree { return pickNode(n, c, "d", "d/x.conf") },
			report: Report{Modified: []string{"d/x.conf"}, Conflicts: []string{"d/x.conf"}},
		},
		{
			name:   "directory metadata changed locally, directory removed upstream",
			old:    base,
			cur:    base.with("d", dir().perm(0o700)),
			new:    base.without("d"),
			want:   func(o, c, n tree) tree { return pickNode(n, c, "d") },
			report: Report{Modified: []string{"d"}, Conflicts: []string{"d"}},
		},
		{
			name:   "local addition below a directory replaced by a file upstream",
			old:    base,
			cur:    base.with("d/new.conf", file("n\n")),
			new:    base.without("d").with("d", file("upstream file\n")),
			want:   func(o, c, n tree) tree { return pickNode(n.without("d"), c, "d", "d/new.conf") },
			report: Report{Added: []string{"d/new.conf"}, Conflicts: []string{"d"}},
		},
		{
			name: "fifo added locally",
			old:  base, cur: base.with("initctl", fifo().perm(0o600)), new: base,
			want:   func(o, c, n tree) tree { return pick(n, c, "initctl") },
			report: Report{Added: []string{"initctl"}},
		},
		{
			name: "device node added locally",
			root: true,
			old:  base, cur: base.with("null", chardev(1, 3).perm(0o666)), new: base.with("zero", chardev(1, 5)),
			want:   func(o, c, n tree) tree { return pick(n, c, "null") },
			report: Report{Added: []string{"null"}},
		},
		{
			name: "device number changed locally",
			root: true,
			old:  base.with("tty", chardev(4, 1)), cur: base.with("tty", chardev(4, 2)), new: base.with("tty", chardev(4, 1)),
			want:   func(o, c, n tree) tree { return pick(n, c, "tty") },
			report: Report{Modified: []string{"tty"}},
		},
		{
			name: "socket added locally is skipped",
			old:  base, cur: base.with("s", node{kind: 's'}), new: base,
			want:   same,
			report: Report{Added: []string{"s"}, Skipped: []string{"s"}},
		},
		{
			name:   "large file modified at its very end",
			old:    base.with("big", file(strings.Repeat("0123456789abcdef", 40_000)+"A")),
			cur:    base.with("big", file(strings.Repeat("0123456789abcdef", 40_000)+"B")),
			new:    base.with("big", file(strings.Repeat("0123456789abcdef", 40_000)+"A")),
			want:   func(o, c, n tree) tree { return pick(n, c, "big") },
			report: Report{Modified: []string{"big"}},
		},
	}
}

// labeled gives every node of t an SELinux label (security.* xattrs need
// root to set).
func labeled(t tree) tree {
	c := t.clone()
	for k, n := range c {
		c[k] = n.xattr("security.selinux", "system_u:object_r:etc_t:s0")
	}
	return c
}

func TestMerge(t *testing.T) {
	for _, tc := range mergeCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testutil.RequireRoot(t)
			}
			tmp := t.TempDir()
			o, c, n := resolve(tc.old, tOld), resolve(tc.cur, tCur), resolve(tc.new, tNew)
			build(t, filepath.Join(tmp, "old"), o)
			build(t, filepath.Join(tmp, "cur"), c)
			build(t, filepath.Join(tmp, "new"), n)
			out := filepath.Join(tmp, "out")
			rep, err := Merge(context.Background(), filepath.Join(tmp, "old"), filepath.Join(tmp, "cur"),
				filepath.Join(tmp, "new"), out, tc.opts)
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			if d := diffTrees(snapshot(t, out), tc.want(o, c, n)); len(d) > 0 {
				t.Errorf("result differs from the expected tree:\n%s", strings.Join(d, "\n"))
			}
			if !reflect.DeepEqual(normReport(*rep), normReport(tc.report)) {
				t.Errorf("report\n got  %+v\n want %+v", *rep, tc.report)
			}
			// The inputs are left alone.
			for name, want := range map[string]tree{"old": o, "cur": c, "new": n} {
				if d := diffTrees(snapshot(t, filepath.Join(tmp, name)), want); len(d) > 0 {
					t.Errorf("input %s was modified:\n%s", name, strings.Join(d, "\n"))
				}
			}
			if l := leftovers(t, tmp, "old", "cur", "new", "out"); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

func normReport(r Report) Report {
	for _, l := range []*[]string{&r.Added, &r.Modified, &r.Deleted, &r.Conflicts, &r.Skipped} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return r
}

// TestMergeNeverFollowsUpstreamSymlinks: newDefaults turned a directory
// into a symlink pointing outside the tree while the administrator changed
// a file below it. The local change wins, the symlink is replaced by a
// real directory, and nothing is written through it.
func TestMergeNeverFollowsUpstreamSymlinks(t *testing.T) {
	tmp := t.TempDir()
	escape := filepath.Join(tmp, "escape")
	if err := os.Mkdir(escape, 0o755); err != nil {
		t.Fatal(err)
	}
	o := resolve(base, tOld)
	c := resolve(base.with("d/x.conf", file("x=local\n"), "d/added.conf", file("added\n")), tCur)
	n := resolve(base.without("d").with("d", link(escape)), tNew)
	build(t, filepath.Join(tmp, "old"), o)
	build(t, filepath.Join(tmp, "cur"), c)
	build(t, filepath.Join(tmp, "new"), n)
	out := filepath.Join(tmp, "out")
	rep, err := Merge(context.Background(), filepath.Join(tmp, "old"), filepath.Join(tmp, "cur"), filepath.Join(tmp, "new"), out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := pickNode(n.without("d"), c, "d", "d/x.conf", "d/added.conf")
	if d := diffTrees(snapshot(t, out), want); len(d) > 0 {
		t.Errorf("result differs:\n%s", strings.Join(d, "\n"))
	}
	if l := leftovers(t, escape); len(l) > 0 {
		t.Fatalf("merge wrote through an upstream symlink into %s: %v", escape, l)
	}
	wantRep := Report{Added: []string{"d/added.conf"}, Modified: []string{"d/x.conf"}, Conflicts: []string{"d", "d/x.conf"}}
	if !reflect.DeepEqual(normReport(*rep), wantRep) {
		t.Errorf("report %+v, want %+v", *rep, wantRep)
	}
}

func setupBase(t *testing.T) (tmp, old, cur, nw string) {
	tmp = t.TempDir()
	old, cur, nw = filepath.Join(tmp, "old"), filepath.Join(tmp, "cur"), filepath.Join(tmp, "new")
	build(t, old, resolve(base, tOld))
	build(t, cur, resolve(base.with("a.conf", file("local\n"), "n1", dir(), "n1/f", file("f\n")).without("b.conf"), tCur))
	build(t, nw, resolve(base.with("a.conf", file("upstream\n"), "up", dir(), "up/f", file("u\n")), tNew))
	return tmp, old, cur, nw
}

func TestMergeRefusesExistingOutput(t *testing.T) {
	tmp, old, cur, nw := setupBase(t)
	for _, existing := range []string{"dir", "file", "symlink"} {
		out := filepath.Join(tmp, "out-"+existing)
		var err error
		switch existing {
		case "dir":
			err = os.Mkdir(out, 0o755)
		case "file":
			err = os.WriteFile(out, []byte("keep"), 0o644)
		case "symlink":
			err = os.Symlink("/nonexistent", out)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = Merge(context.Background(), old, cur, nw, out, Options{})
		if !errors.Is(err, ErrOutputExists) {
			t.Errorf("%s: Merge = %v, want ErrOutputExists", existing, err)
		}
	}
	if l := leftovers(t, tmp, "old", "cur", "new", "out-dir", "out-file", "out-symlink"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "out-file")); string(b) != "keep" {
		t.Fatal("existing output modified")
	}
}

func TestMergeRefusesBadInputs(t *testing.T) {
	tmp, old, cur, nw := setupBase(t)
	f := filepath.Join(tmp, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(context.Background(), old, f, nw, filepath.Join(tmp, "out"), Options{}); !errors.Is(err, ErrNotDirectory) {
		t.Errorf("file as input: %v, want ErrNotDirectory", err)
	}
	if _, err := Merge(context.Background(), filepath.Join(tmp, "missing"), cur, nw, filepath.Join(tmp, "out"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing input: %v, want ErrNotExist", err)
	}
	if _, err := Merge(context.Background(), old, cur, nw, filepath.Join(tmp, "no/such/parent/out"), Options{}); err == nil {
		t.Error("missing parent of out accepted")
	}
	if l := leftovers(t, tmp, "old", "cur", "new", "file"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// countdownCtx reports cancellation after a number of Err calls, to stop
// Merge at every point where it checks.
type countdownCtx struct {
	context.Context
	left atomic.Int64
}

func (c *countdownCtx) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestMergeIsAtomic interrupts Merge at every cancellation point: each
// run either fails leaving nothing behind, or produces the same result as
// an uninterrupted merge.
func TestMergeIsAtomic(t *testing.T) {
	tmp, old, cur, nw := setupBase(t)
	ref := filepath.Join(tmp, "ref")
	refRep, err := Merge(context.Background(), old, cur, nw, ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	refTree := snapshot(t, ref)
	failures := 0
	for k := int64(0); ; k++ {
		ctx := &countdownCtx{Context: context.Background()}
		ctx.left.Store(k)
		out := filepath.Join(tmp, "out")
		rep, err := Merge(ctx, old, cur, nw, out, Options{})
		if err != nil {
			failures++
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("stop after %d checks: %v, want context.Canceled", k, err)
			}
			if l := leftovers(t, tmp, "old", "cur", "new", "ref"); len(l) > 0 {
				t.Fatalf("stop after %d checks left %v", k, l)
			}
			continue
		}
		if d := diffTrees(snapshot(t, out), refTree); len(d) > 0 {
			t.Fatalf("result after %d checks differs from the reference:\n%s", k, strings.Join(d, "\n"))
		}
		if !reflect.DeepEqual(rep, refRep) {
			t.Fatalf("report %+v, want %+v", rep, refRep)
		}
		break
	}
	if failures < 10 {
		t.Fatalf("only %d cancellation points exercised", failures)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Merge(ctx, old, cur, nw, filepath.Join(tmp, "out2"), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

// TestMergeDeterministic: two merges of the same inputs give identical
// trees (times included) and reports.
func TestMergeDeterministic(t *testing.T) {
	tmp, old, cur, nw := setupBase(t)
	r1, err := Merge(context.Background(), old, cur, nw, filepath.Join(tmp, "o1"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Merge(context.Background(), old, cur, nw, filepath.Join(tmp, "o2"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(snapshot(t, filepath.Join(tmp, "o1")), snapshot(t, filepath.Join(tmp, "o2"))); len(d) > 0 {
		t.Fatalf("trees differ:\n%s", strings.Join(d, "\n"))
	}
	want := Report{Added: []string{"n1"}, Modified: []string{"a.conf"}, Deleted: []string{"b.conf"}, Conflicts: []string{"a.conf"}}
	if !reflect.DeepEqual(r1, r2) || !reflect.DeepEqual(*r1, want) {
		t.Fatalf("reports %+v / %+v, want %+v", r1, r2, want)
	}
}

// TestMergeDropsInheritedACLs: out's parent has a default ACL, which
// every file created below it inherits; the result must carry exactly the
// sources' xattrs, so the inherited ACLs are removed again.
func TestMergeDropsInheritedACLs(t *testing.T) {
	setfacl := testutil.RequireTool(t, "setfacl")
	tmp, old, cur, nw := setupBase(t)
	parent := filepath.Join(tmp, "parent")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setfacl, "-d", "-m", "u:1234:rwx", parent).CombinedOutput(); err != nil {
		t.Fatalf("setfacl: %v\n%s", err, out)
	}
	probe := filepath.Join(parent, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(readXattrs(t, probe)) == 0 {
		testutil.Skip(t, "file system does not apply default ACLs (mounted with noacl?)")
	}
	os.Remove(probe)
	out := filepath.Join(parent, "etc")
	if _, err := Merge(context.Background(), old, cur, nw, out, Options{}); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(tmp, "ref")
	if _, err := Merge(context.Background(), old, cur, nw, ref, Options{}); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, out)
	if d := diffTrees(got, snapshot(t, ref)); len(d) > 0 {
		t.Fatalf("inherited ACLs leaked into the result:\n%s", strings.Join(d, "\n"))
	}
	if len(got["up/f"].xattrs) != 0 || len(got["n1"].xattrs) != 0 {
		t.Fatalf("xattrs %v / %v", got["up/f"].xattrs, got["n1"].xattrs)
	}
}
