package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cfs-dev/cfs/deploy/bls"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// Boot entry conventions (see docs/deployments.md).
const (
	// EntryPrefix starts the file name of every entry cfs writes:
	// cfs-<serial>[+LEFT[-DONE]].conf, where <serial> only grows and is
	// also the entry's version, so that systemd-boot, GRUB and a file
	// name sort all put the newest entry first.
	EntryPrefix = "cfs-"
	// SortKey is the sort-key of cfs entries.
	SortKey = "cfs"
	// DefaultTries is the Automatic Boot Assessment counter of new
	// entries: name+3.conf.
	DefaultTries = 3
)

// bootEntry is one file of loader/entries.
type bootEntry struct {
	File   string
	Raw    []byte
	Entry  *bls.Entry    // nil when the file does not parse
	Dep    *Deployment   // set for cfs entries
	Serial int           // cfs entries: the serial of the file name
	Name   bls.Name      // parsed file name (boot counting)
	Boot   *cmdline.Boot // cfs entries: the cfs kernel arguments
}

// loadEntries reads loader/entries in boot order: parsed entries sorted
// as systemd-boot does (bls.Sort), then files that do not parse. Every
// regular file is kept (a rewrite copies foreign files verbatim); anything
// else in the directory is an error, since a rewrite could not carry it.
func (s *Sysroot) loadEntries(ctx context.Context) ([]*bootEntry, error) {
	dir := s.path(BootDir, EntriesDir)
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var parsed []bls.LoadedEntry
	byFile := map[string]*bootEntry{}
	var broken []*bootEntry
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !de.Type().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file; cfs cannot rewrite the entries directory", ErrEntries, filepath.Join(dir, de.Name()))
		}
		raw, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, err
		}
		be := &bootEntry{File: de.Name(), Raw: raw}
		name := de.Name()
		isConf := len(name) > len(bls.Suffix) && strings.EqualFold(name[len(name)-len(bls.Suffix):], bls.Suffix) && name[0] != '.'
		if isConf {
			if e, err := bls.Parse(bytes.NewReader(raw)); err == nil {
				be.Entry = e
			}
		}
		if be.Entry == nil {
			broken = append(broken, be)
			continue
		}
		be.Name = bls.LoadedEntry{FileName: name}.Name()
		classifyEntry(be)
		byFile[name] = be
		parsed = append(parsed, bls.LoadedEntry{FileName: name, Entry: be.Entry})
	}
	bls.Sort(parsed)
	out := make([]*bootEntry, 0, len(parsed)+len(broken))
	for _, l := range parsed {
		out = append(out, byFile[l.FileName])
	}
	return append(out, broken...), nil
}

// classifyEntry sets Dep, Serial and Boot when be is an entry cfs wrote:
// named cfs-<serial>, with a cfs.deployment= argument naming a deployment.
func classifyEntry(be *bootEntry) {
	serial, ok := entrySerial(be.Name.Base)
	if !ok {
		return
	}
	boot, err := cmdline.ParseBoot(cmdline.Split(be.Entry.Cmdline()))
	if err != nil || boot.Deployment == "" {
		return
	}
	d, err := ParseDeploymentPath(boot.Deployment)
	if err != nil {
		return
	}
	be.Dep, be.Serial, be.Boot = &d, serial, boot
}

// entrySerial parses "cfs-<serial>".
func entrySerial(base string) (int, bool) {
	rest, ok := strings.CutPrefix(base, EntryPrefix)
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// cfsEntries returns the cfs entries of entries, in boot order.
func cfsEntries(entries []*bootEntry) []*bootEntry {
	var out []*bootEntry
	for _, e := range entries {
		if e.Dep != nil {
			out = append(out, e)
		}
	}
	return out
}

// maxSerial returns the highest serial of any file named like a cfs
// entry (-1 if none).
func maxSerial(entries []*bootEntry) int {
	m := -1
	for _, e := range entries {
		n, err := bls.ParseFileName(e.File)
		if err != nil {
			continue
		}
		if serial, ok := entrySerial(n.Base); ok && serial > m {
			m = serial
		}
	}
	return m
}

// plannedEntry is one file of a new entries set: a cfs entry (Entry,
// marshalled with the set's machine-id) or a foreign file (Raw, copied
// verbatim).
type plannedEntry struct {
	File  string
	Entry *bls.Entry
	Raw   []byte
}

// planKept turns current entries into planned ones, unchanged.
func planKept(e *bootEntry) plannedEntry {
	if e.Dep == nil {
		return plannedEntry{File: e.File, Raw: e.Raw}
	}
	c := *e.Entry
	return plannedEntry{File: e.File, Entry: &c}
}

// swapEntries installs a new boot entries set atomically: every file is
// written to loader/entries.new and fsynced, the directory fsynced, then
// one renameat2(RENAME_EXCHANGE) swaps entries.new and entries (a plain
// rename the first time), the loader directory is fsynced, and the old set
// (now entries.new) removed. The exchange is the only point at which what
// boots changes; a crash before it leaves the old set, after it the new
// one, and recovery removes entries.new either way.
//
// Every cfs entry gets machineID (or none), so that the boot loader's
// machine-id ordering never separates them. The set must put wantFirst
// (a file name) first among the cfs entries.
//
// swapped reports whether the exchange happened: an error after it (a
// step hook, removing the old set) does not undo the new set.
func (s *Sysroot) swapEntries(ctx context.Context, planned []plannedEntry, machineID, wantFirst string) (swapped bool, retErr error) {
	files := make([][]byte, len(planned))
	var order []bls.LoadedEntry
	seen := map[string]bool{}
	for i, p := range planned {
		if seen[strings.ToLower(p.File)] {
			return false, fmt.Errorf("%w: two entries named %s", ErrEntries, p.File)
		}
		seen[strings.ToLower(p.File)] = true
		if p.Entry == nil {
			files[i] = p.Raw
			continue
		}
		p.Entry.MachineID = machineID
		if err := bls.ValidFileName(p.File); err != nil {
			return false, fmt.Errorf("%w: %v", ErrEntries, err)
		}
		if err := p.Entry.Validate(); err != nil {
			return false, fmt.Errorf("%w: %s: %v", ErrEntries, p.File, err)
		}
		files[i] = p.Entry.Marshal()
		order = append(order, bls.LoadedEntry{FileName: p.File, Entry: p.Entry})
	}
	bls.Sort(order)
	if wantFirst != "" && (len(order) == 0 || order[0].FileName != wantFirst) {
		return false, fmt.Errorf("%w: the new default %s would not be the first cfs entry", ErrEntries, wantFirst)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}

	loader := s.path(BootDir, "loader")
	if err := mkdirDurable(loader); err != nil {
		return false, err
	}
	newDir := s.path(BootDir, EntriesNew)
	if err := removeAllDurable(newDir); err != nil {
		return false, err
	}
	if err := os.Mkdir(newDir, 0o755); err != nil {
		return false, err
	}
	defer func() {
		if retErr != nil && !swapped {
			if err := removeAllDurable(newDir); err != nil {
				retErr = errors.Join(retErr, err)
			}
		}
	}()
	for i, p := range planned {
		if err := writeSynced(filepath.Join(newDir, p.File), files[i]); err != nil {
			return false, err
		}
		if i == 0 {
			if err := s.step(StepEntryWritten); err != nil {
				return false, err
			}
		}
	}
	if err := atomicfile.SyncDir(newDir); err != nil {
		return false, err
	}
	if err := s.step(StepEntriesWritten); err != nil {
		return false, err
	}
	cur := s.path(BootDir, EntriesDir)
	if _, err := os.Lstat(cur); err == nil {
		if err := exchange(newDir, cur); err != nil {
			return false, err
		}
	} else if err := renameNoReplace(newDir, cur); err != nil {
		return false, err
	}
	swapped = true
	if err := atomicfile.SyncDir(loader); err != nil {
		return true, fmt.Errorf("boot entries swapped, but: %w", err)
	}
	if err := s.step(StepEntriesSwapped); err != nil {
		return true, err
	}
	if err := removeAllDurable(newDir); err != nil {
		s.log.Warn("removing the old boot entries", "err", err)
	}
	return true, s.step(StepDone)
}

// writeSynced creates a new file with data and fsyncs it.
func writeSynced(p string, data []byte) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}

// readMachineID returns the machine id of a deployment's /etc, or "".
func readMachineID(etc string) string {
	b, err := os.ReadFile(filepath.Join(etc, "machine-id"))
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 32 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return id
}

// entryMachineID returns the machine id the current cfs entries carry.
func entryMachineID(entries []*bootEntry) string {
	for _, e := range cfsEntries(entries) {
		if e.Entry.MachineID != "" {
			return e.Entry.MachineID
		}
	}
	return ""
}

// newEntryName returns the file name of a new cfs entry with the given
// serial, with a fresh boot counter.
func newEntryName(serial int) string {
	return bls.FileName(EntryPrefix+strconv.Itoa(serial), DefaultTries, 0)
}

// managedArgs are the kernel arguments cfs sets itself on each entry;
// they are never carried over from another entry nor taken from --karg.
var managedArgs = []string{cmdline.ParamComposefs, cmdline.ParamDeployment, cmdline.ParamCommit, cmdline.ParamStateroot}

// computeKargs derives a new entry's kernel arguments: the current
// default's arguments without the cfs-managed ones, minus --karg-delete,
// plus --karg, plus composefs= and cfs.deployment= for d.
func computeKargs(base []string, deletes, adds []string) ([]string, error) {
	args := slices.Clone(base)
	for _, name := range managedArgs {
		args, _ = cmdline.Delete(args, name)
	}
	for _, spec := range deletes {
		var n int
		args, n = cmdline.Delete(args, spec)
		if n == 0 {
			return nil, fmt.Errorf("%w: --karg-delete %q: no such argument", ErrBadKarg, spec)
		}
	}
	for _, a := range adds {
		if slices.Contains(managedArgs, cmdline.Name(a)) {
			return nil, fmt.Errorf("%w: --karg %q: cfs sets %s= itself", ErrBadKarg, a, cmdline.Name(a))
		}
		var err error
		if args, err = cmdline.Append(args, a); err != nil {
			return nil, fmt.Errorf("%w: --karg %q: %v", ErrBadKarg, a, err)
		}
	}
	return args, nil
}
