package mount

import (
	"reflect"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	in := PlanInput{ImageSource: "/proc/self/fd/7", MetaDir: "/tmp/.composefs.x", Target: "/mnt"}
	for _, tc := range []struct {
		name   string
		hasACL bool
		opts   Options
		erofs  []string
		ovl    []string
		ro     bool
	}{
		{
			name:  "kernel verity, one store",
			opts:  Options{BaseDirs: []string{"/objects"}},
			erofs: []string{"ro", "noacl"},
			ovl:   []string{"metacopy=on", "redirect_dir=on", "verity=require", "lowerdir+=/tmp/.composefs.x", "datadir+=/objects"},
			ro:    true,
		},
		{
			name:   "objects verified in user space, ACLs, two stores with commas",
			hasACL: true,
			opts:   Options{BaseDirs: []string{"/a,b", "/c:d"}, Verify: VerifyObjects},
			erofs:  []string{"ro"},
			ovl:    []string{"metacopy=on", "redirect_dir=on", "lowerdir+=/tmp/.composefs.x", "datadir+=/a,b", "datadir+=/c:d"},
			ro:     true,
		},
		{
			name:  "unverified, writable",
			opts:  Options{BaseDirs: []string{"/o"}, Verify: VerifyNone, UpperDir: "/u", WorkDir: "/w", Writable: true},
			erofs: []string{"ro", "noacl"},
			ovl:   []string{"metacopy=on", "redirect_dir=on", "lowerdir+=/tmp/.composefs.x", "datadir+=/o", "upperdir=/u", "workdir=/w"},
			ro:    false,
		},
		{
			name:  "upper and work dirs needing escapes",
			opts:  Options{BaseDirs: []string{`/o\x`}, Verify: VerifyNone, UpperDir: `/u\1,2`, WorkDir: `/w:\`, Writable: true},
			erofs: []string{"ro", "noacl"},
			ovl:   []string{"metacopy=on", "redirect_dir=on", "lowerdir+=/tmp/.composefs.x", `datadir+=/o\x`, `upperdir=/u\\1,2`, `workdir=/w:\\`},
			ro:    false,
		},
		{
			name:  "upper dir but read-only",
			opts:  Options{BaseDirs: []string{"/o"}, Verify: VerifyNone, UpperDir: "/u", WorkDir: "/w"},
			erofs: []string{"ro", "noacl"},
			ovl:   []string{"metacopy=on", "redirect_dir=on", "lowerdir+=/tmp/.composefs.x", "datadir+=/o", "upperdir=/u", "workdir=/w"},
			ro:    true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := in
			in.HasACL = tc.hasACL
			p := Plan(in, tc.opts)
			want := []Step{
				{Type: "erofs", Source: "/proc/self/fd/7", Target: "/tmp/.composefs.x", Options: tc.erofs, ReadOnly: true, LoopFallback: true, Detach: true},
				{Type: "overlay", Source: "composefs", Target: "/mnt", Options: tc.ovl, ReadOnly: tc.ro},
			}
			if !reflect.DeepEqual(p, want) {
				t.Fatalf("plan\n got %#v\nwant %#v", p, want)
			}
		})
	}
}

func TestLegacyVariants(t *testing.T) {
	ovl := Step{
		Type: "overlay", Source: "composefs", Target: "/mnt", ReadOnly: true,
		Options: []string{"metacopy=on", "redirect_dir=on", "verity=require", "lowerdir+=/m", "datadir+=/obj,1", `datadir+=/o:2\x`},
	}
	got := legacyVariants(ovl)
	want := []legacyMount{
		{Source: "composefs", Target: "/mnt", Type: "overlay", ReadOnly: true,
			Data: `metacopy=on,redirect_dir=on,verity=require,lowerdir=/m::/obj\,1::/o\:2\\x`},
		{Source: "composefs", Target: "/mnt", Type: "overlay", ReadOnly: true,
			Data: `metacopy=on,redirect_dir=on,verity=require,lowerdir=/m:/obj\,1:/o\:2\\x`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("overlay\n got %#v\nwant %#v", got, want)
	}

	// From a plan: upperdir/workdir come with '\' escaped already.
	ovl = Plan(PlanInput{ImageSource: "/i", MetaDir: "/m", Target: "/mnt"},
		Options{BaseDirs: []string{"/o"}, Verify: VerifyNone, UpperDir: `/u,1\`, WorkDir: "/w:2", Writable: true})[1]
	got = legacyVariants(ovl)
	if len(got) != 2 || got[0].ReadOnly || got[0].Data != `metacopy=on,redirect_dir=on,lowerdir=/m::/o,upperdir=/u\,1\\,workdir=/w:2` {
		t.Fatalf("writable overlay: %#v", got)
	}

	erofs := Step{Type: "erofs", Source: "/dev/loop3", Target: "/m", Options: []string{"ro", "noacl"}}
	got = legacyVariants(erofs)
	want = []legacyMount{{Source: "/dev/loop3", Target: "/m", Type: "erofs", ReadOnly: true, Data: "noacl"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("erofs\n got %#v\nwant %#v", got, want)
	}
}

func TestStepString(t *testing.T) {
	s := Step{Type: "overlay", Source: "composefs", Target: "/mnt", ReadOnly: true, Options: []string{"metacopy=on", "datadir+=/o"}}
	if got := s.String(); got != "-t overlay -o ro,metacopy=on,datadir+=/o composefs /mnt" {
		t.Fatalf("%s", got)
	}
	if !strings.Contains(Step{Type: "erofs", Source: "/img", Target: "/m"}.String(), "/img /m") {
		t.Fatal("no source/target")
	}
}
