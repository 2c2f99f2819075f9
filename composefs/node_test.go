package composefs

import (
	"errors"
	"strings"
	"testing"
)

func dir(name string) *Node { return NewNode(name, TypeDir|0o755) }

func TestAddChildSortedAndValidated(t *testing.T) {
	root := dir("")
	for _, name := range []string{"b", "a", "-x", ".a", "c"} {
		if err := root.AddChild(NewNode(name, TypeRegular|0o644)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, c := range root.Children {
		got = append(got, c.Name)
	}
	if strings.Join(got, ",") != "-x,.a,a,b,c" {
		t.Fatalf("order %v", got)
	}
	for _, bad := range []string{"", ".", "..", "a/b", strings.Repeat("x", 256), "a"} {
		if err := root.AddChild(NewNode(bad, TypeRegular)); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddChild(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if root.Lookup("b") == nil || root.Lookup("zz") != nil {
		t.Fatal("Lookup")
	}
	if p := root.Lookup("b").Path(); p != "/b" {
		t.Fatalf("Path %q", p)
	}
}

func TestSetXattrLimits(t *testing.T) {
	n := NewNode("f", TypeRegular)
	if err := n.SetXattr("user.a", "1"); err != nil {
		t.Fatal(err)
	}
	if err := n.SetXattr("user.a", "2"); err != nil {
		t.Fatal(err)
	}
	if v, _ := n.GetXattr("user.a"); v != "2" || len(n.Xattrs) != 1 {
		t.Fatalf("replace failed: %+v", n.Xattrs)
	}
	for name, value := range map[string]string{"": "x", strings.Repeat("n", 256): "x", "user.big": strings.Repeat("v", 65536)} {
		if err := n.SetXattr(name, value); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetXattr(%d-byte name, %d-byte value) = %v", len(name), len(value), err)
		}
	}
	if err := n.SetXattr("user.b", strings.Repeat("v", 32760)); !errors.Is(err, ErrInvalid) {
		t.Errorf("budget not enforced: %v", err)
	}
}

func TestValidateHardlinks(t *testing.T) {
	root := dir("")
	a := NewNode("a", TypeRegular|0o644)
	b := NewNode("b", TypeRegular)
	c := NewNode("c", TypeRegular)
	d := NewNode("d", TypeDir|0o755)
	for _, n := range []*Node{a, b, c, d} {
		if err := root.AddChild(n); err != nil {
			t.Fatal(err)
		}
	}
	b.Link = a
	if err := root.Validate(); err != nil {
		t.Fatalf("valid hardlink refused: %v", err)
	}
	// a loop that does not pass through the start: b -> c -> a -> c
	a.Link, c.Link = c, a
	if err := root.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("loop: %v", err)
	}
	a.Link, c.Link = nil, nil
	b.Link = d
	if err := root.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("dir hardlink: %v", err)
	}
	b.Link = NewNode("outside", TypeRegular)
	if err := root.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("outside link: %v", err)
	}
}

func TestValidateNode(t *testing.T) {
	cases := map[string]*Node{
		"no type":       {Name: "x", Mode: 0o644},
		"empty symlink": {Name: "x", Mode: TypeSymlink | 0o777},
		"long symlink":  {Name: "x", Mode: TypeSymlink | 0o777, Payload: strings.Repeat("a", 4096)},
		"content size":  {Name: "x", Mode: TypeRegular, Size: 3, Content: []byte("ab")},
		"big inline":    {Name: "x", Mode: TypeRegular, Size: 5001, Content: make([]byte, 5001)},
		"too big":       {Name: "x", Mode: TypeRegular, Size: MaxFileSize + 1},
		"xattr budget":  {Name: "x", Mode: TypeRegular, Xattrs: []Xattr{{"user.a", strings.Repeat("v", 40000)}}},
	}
	for name, n := range cases {
		if err := ValidateNode(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := ValidateNode(&Node{Name: "ok", Mode: TypeSymlink | 0o777, Payload: "t"}); err != nil {
		t.Errorf("valid symlink: %v", err)
	}
}

func TestValidateRefusesCycles(t *testing.T) {
	root := dir("")
	sub := dir("sub")
	if err := root.AddChild(sub); err != nil {
		t.Fatal(err)
	}
	sub.Children = append(sub.Children, root) // a directory inside itself
	if err := root.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cycle: %v", err)
	}
}
