package composefs

import (
	"fmt"
	"testing"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

func file(name string, d byte) *Node {
	n := NewNode(name, TypeRegular|0o644)
	n.Size = 100
	dg := fsverity.Digest{d}
	n.Digest = &dg
	n.Payload = dg.ObjectPath()
	return n
}

func mustAdd(t *testing.T, parent *Node, kids ...*Node) {
	t.Helper()
	for _, k := range kids {
		if err := parent.AddChild(k); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDiff(t *testing.T) {
	a, b := dir(""), dir("")
	etcA, etcB := dir("etc"), dir("etc")
	mustAdd(t, a, etcA, file("same", 1), file("changed", 2), file("gone", 3), dir("olddir"))
	mustAdd(t, a.Lookup("olddir"), file("inner", 4))
	mustAdd(t, b, etcB, file("same", 1), file("changed", 9), file("new", 5))
	chmod := file("mode", 6)
	mustAdd(t, a, file("mode", 6))
	chmod.Mode = TypeRegular | 0o600
	mustAdd(t, b, chmod)
	x := file("x", 7)
	mustAdd(t, etcA, file("x", 7))
	if err := x.SetXattr("user.k", "v"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, etcB, x)

	var got []string
	for _, c := range Diff(a, b) {
		got = append(got, fmt.Sprintf("%c %s", c.Kind, c.Path))
	}
	want := []string{"M /changed", "M /etc/x", "D /gone", "M /mode", "A /new", "D /olddir", "D /olddir/inner"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Diff:\n got %v\nwant %v", got, want)
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("self diff: %v", d)
	}
}
