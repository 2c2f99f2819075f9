package bls

import (
	"slices"
	"strings"
)

// LoadedEntry is an entry together with the file name it was read from
// (or will be written to).
type LoadedEntry struct {
	FileName string
	Entry    *Entry
}

// Name parses the entry's file name; a name ParseFileName rejects counts
// as one without boot counting (systemd-boot ignores such counters too).
func (l LoadedEntry) Name() Name {
	n, err := ParseFileName(l.FileName)
	if err != nil {
		base := l.FileName
		if len(base) >= len(Suffix) && strings.EqualFold(base[len(base)-len(Suffix):], Suffix) {
			base = base[:len(base)-len(Suffix)]
		}
		return Name{Base: base}
	}
	return n
}

// Compare orders two entries the way systemd-boot's boot menu does (first
// = shown first, default): it returns a negative number when a comes before
// b.
//
//  1. Entries that are bad (boot counter at +0) go after all others.
//  2. An entry with a sort-key comes before one without.
//  3. If both have a sort-key: sort-key ascending, then machine-id
//     ascending (absent first), then version descending (CompareVersions).
//  4. The file name without counters, suffix included, case-folded,
//     descending by CompareVersions.
//  5. If both have counters: more tries left first, then fewer tries done.
//  6. Finally the raw file names, byte-wise ascending, so that the order
//     is total and Sort deterministic.
//
// Steps 1 to 5 are systemd-boot's boot_entry_compare; step 6 only breaks
// ties systemd leaves to the order it read the directory in.
func Compare(a, b LoadedEntry) int {
	return compareKeys(keyOf(a), keyOf(b))
}

type sortKey struct {
	fileName string
	name     Name
	id       string
	entry    *Entry
}

func keyOf(l LoadedEntry) sortKey {
	n := l.Name()
	e := l.Entry
	if e == nil {
		e = &Entry{}
	}
	return sortKey{fileName: l.FileName, name: n, id: n.id(), entry: e}
}

func compareKeys(a, b sortKey) int {
	if r := cmpBool(a.name.Bad(), b.name.Bad()); r != 0 {
		return r
	}
	ha, hb := a.entry.SortKey != "", b.entry.SortKey != ""
	if r := cmpBool(!ha, !hb); r != 0 {
		return r
	}
	if ha && hb {
		if r := strings.Compare(a.entry.SortKey, b.entry.SortKey); r != 0 {
			return r
		}
		if r := strings.Compare(a.entry.MachineID, b.entry.MachineID); r != 0 {
			return r
		}
		if r := CompareVersions(a.entry.Version, b.entry.Version); r != 0 {
			return -r
		}
	}
	if r := CompareVersions(a.id, b.id); r != 0 {
		return -r
	}
	if a.name.HasCounter && b.name.HasCounter {
		if r := cmpInt(a.name.Left, b.name.Left); r != 0 {
			return -r
		}
		if r := cmpInt(a.name.Done, b.name.Done); r != 0 {
			return r
		}
	}
	return strings.Compare(a.fileName, b.fileName)
}

// Sort orders entries in place by Compare.
func Sort(entries []LoadedEntry) {
	keys := make([]sortKey, len(entries))
	idx := make([]int, len(entries))
	for i, l := range entries {
		keys[i] = keyOf(l)
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int { return compareKeys(keys[x], keys[y]) })
	sorted := make([]LoadedEntry, len(entries))
	for i, k := range idx {
		sorted[i] = entries[k]
	}
	copy(entries, sorted)
}
