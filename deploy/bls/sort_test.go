package bls

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func names(entries []LoadedEntry) string {
	s := make([]string, len(entries))
	for i, e := range entries {
		s[i] = e.FileName
	}
	return strings.Join(s, " ")
}

func le(file string, e Entry) LoadedEntry {
	if e.Linux == "" && e.EFI == "" {
		e.Linux = "/vmlinuz"
	}
	return LoadedEntry{FileName: file, Entry: &e}
}

// sortAllPermutations sorts every rotation and some shuffles of in and
// checks that the result is always want: the order does not depend on the
// input order.
func checkSorted(t *testing.T, in []LoadedEntry, want string) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 20; i++ {
		c := slices.Clone(in)
		r.Shuffle(len(c), func(a, b int) { c[a], c[b] = c[b], c[a] })
		Sort(c)
		if got := names(c); got != want {
			t.Fatalf("order after shuffle %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// The vector of systemd's test-bootspec.c bootspec_sort.
func TestSortSystemdVector(t *testing.T) {
	in := []LoadedEntry{
		le("a-10.conf", Entry{Title: "A", Version: "10", MachineID: "dd235d00696545768f6f693bfd23b15f"}),
		le("a-5.conf", Entry{Title: "A", Version: "5", MachineID: "dd235d00696545768f6f693bfd23b15f"}),
		le("b.conf", Entry{Title: "B", Version: "3", MachineID: "b75451ad92f94feeab50b0b442768dbd"}),
		le("c.conf", Entry{Title: "C", SortKey: "xxxx", Version: "5", MachineID: "309de666fd5044268a9a26541ac93176"}),
		le("cx.conf", Entry{Title: "C", SortKey: "xxxx", Version: "10", MachineID: "309de666fd5044268a9a26541ac93176"}),
		le("d.conf", Entry{Title: "D", SortKey: "kkkk", Version: "100", MachineID: "81c6e3147cf544c19006af023e22b292"}),
	}
	checkSorted(t, in, "d.conf cx.conf c.conf b.conf a-10.conf a-5.conf")
}

func TestSortRules(t *testing.T) {
	const m1, m2 = "11111111111111111111111111111111", "22222222222222222222222222222222"
	in := []LoadedEntry{
		// Bad entries last, whatever their keys.
		le("zzz+0-3.conf", Entry{SortKey: "aaa", Version: "999"}),
		le("cfs-9+0.conf", Entry{SortKey: "cfs", Version: "9"}),
		// sort-key ascending; machine-id ascending (absent first); version descending.
		le("cfs-3.conf", Entry{SortKey: "cfs", MachineID: m1, Version: "3"}),
		le("cfs-10.conf", Entry{SortKey: "cfs", MachineID: m1, Version: "10"}),
		le("cfs-2.conf", Entry{SortKey: "cfs", MachineID: m2, Version: "2"}),
		le("cfs-1.conf", Entry{SortKey: "cfs", Version: "1"}),
		le("arch.conf", Entry{SortKey: "arch", Version: "1"}),
		// Same keys: the counter-less file name decides (descending), then
		// more tries left, then fewer tries done.
		le("x-2+1-2.conf", Entry{SortKey: "x", Version: "1"}),
		le("x-2+3.conf", Entry{SortKey: "x", Version: "1"}),
		le("X-3.conf", Entry{SortKey: "x", Version: "1"}),
		le("x-2+1-1.conf", Entry{SortKey: "x", Version: "1"}),
		// No sort-key: after all entries with one; file name descending.
		le("old-1.conf", Entry{Version: "100"}),
		le("old-2.conf", Entry{Version: "1"}),
		le("old-2+5.conf", Entry{}), // same id as old-2: stable tie-break on the raw name
	}
	checkSorted(t, in, "arch.conf cfs-1.conf cfs-10.conf cfs-3.conf cfs-2.conf "+
		"X-3.conf x-2+3.conf x-2+1-1.conf x-2+1-2.conf old-2+5.conf old-2.conf old-1.conf "+
		"zzz+0-3.conf cfs-9+0.conf")
}

func TestCompareIsAntisymmetric(t *testing.T) {
	in := []LoadedEntry{
		le("a.conf", Entry{}), le("a+1.conf", Entry{}), le("a+0.conf", Entry{}), le("a+1-1.conf", Entry{}),
		le("b.conf", Entry{SortKey: "k"}), le("b.CONF", Entry{SortKey: "k"}), {FileName: "nil-entry.conf"},
		le("weird+99999999999.conf", Entry{}),
	}
	for _, a := range in {
		for _, b := range in {
			if x, y := Compare(a, b), Compare(b, a); (x < 0) != (y > 0) || (x == 0) != (a.FileName == b.FileName) {
				t.Errorf("Compare(%s, %s) = %d, reverse %d", a.FileName, b.FileName, x, y)
			}
		}
	}
}

// TestCfsNamesOrderLikeGRUB checks the naming scheme the package
// documentation recommends: with "cfs-<serial>.conf", "version <serial>"
// and "sort-key cfs", systemd-boot's order (Sort) is the same as ordering
// by version and then by file name alone, descending — what GRUB's blscfg
// does — for good, blessed and indeterminate entries alike.
func TestCfsNamesOrderLikeGRUB(t *testing.T) {
	var in []LoadedEntry
	for serial := 1; serial <= 23; serial++ {
		name := fmt.Sprintf("cfs-%d.conf", serial)
		switch serial % 3 {
		case 1:
			name = FileName(fmt.Sprintf("cfs-%d", serial), 3, 0)
		case 2:
			name = FileName(fmt.Sprintf("cfs-%d", serial), 1, 2)
		}
		in = append(in, le(name, Entry{SortKey: "cfs", Version: fmt.Sprint(serial)}))
	}
	grub := slices.Clone(in)
	slices.SortFunc(grub, func(a, b LoadedEntry) int {
		if r := CompareVersions(a.Entry.Version, b.Entry.Version); r != 0 {
			return -r
		}
		return -CompareVersions(strings.TrimSuffix(a.FileName, Suffix), strings.TrimSuffix(b.FileName, Suffix))
	})
	byName := slices.Clone(in)
	slices.SortFunc(byName, func(a, b LoadedEntry) int {
		return -CompareVersions(strings.TrimSuffix(a.FileName, Suffix), strings.TrimSuffix(b.FileName, Suffix))
	})
	sd := slices.Clone(in)
	Sort(sd)
	if names(sd) != names(grub) || names(sd) != names(byName) {
		t.Fatalf("orders differ:\nsystemd-boot %s\ngrub         %s\nfile name    %s", names(sd), names(grub), names(byName))
	}
	if !strings.HasPrefix(names(sd), "cfs-23+1-2.conf cfs-22+3.conf cfs-21.conf") {
		t.Fatalf("newest serial not first: %s", names(sd))
	}
}
