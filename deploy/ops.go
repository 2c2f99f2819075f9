package deploy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/deploy/bls"
)

// Finalize installs the boot entry of the staged deployment (what `switch
// --stage` prepared), normally at shutdown. The deployment is checked
// again first: its signature against the current trust store, its image
// and boot files against the signed digests. The staged record is removed
// once the entries are swapped; on failure it stays, and nothing changes.
func (s *Sysroot) Finalize(ctx context.Context) (*SwitchResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	rec, d, err := s.readStaged()
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrNotStaged
	}
	m, canonical, envelope, err := s.readDeploymentCommit(*d)
	if err != nil {
		return nil, fmt.Errorf("staged deployment %s: %w", d, err)
	}
	trust, err := s.trustStore()
	if err != nil {
		return nil, err
	}
	vres, err := pull.VerifyCommit(canonical, envelope, trust)
	if err != nil {
		return nil, err
	}
	got, _, err := fsverity.DigestFile(ctx, filepath.Join(s.deployDir(*d), ImageFile))
	if err != nil {
		return nil, fmt.Errorf("staged deployment %s: %w", d, err)
	}
	if got != m.Image.Digest {
		return nil, pull.Mismatch("staged deployment image", m.Image.Digest, got)
	}
	if m.Kernel == nil {
		return nil, fmt.Errorf("staged deployment %s has no kernel", d)
	}
	bf := s.bootFilesFor(d.Stateroot, m.Kernel)
	if bf.Linux != rec.Entry.Linux {
		return nil, fmt.Errorf("staged record names kernel %s, the commit's is %s", rec.Entry.Linux, bf.Linux)
	}
	if err := verifyBootDir(ctx, bf, m.Kernel); err != nil {
		return nil, verifyErr("boot files of the staged deployment", err)
	}
	booted, err := s.booted()
	if err != nil {
		return nil, err
	}
	entry := rec.entry()
	file, swapped, err := s.installDefault(ctx, *d, m, entry, bf, booted)
	res := &SwitchResult{
		Changed: swapped, Stateroot: d.Stateroot, Deployment: d.Path(), Commit: d.Commit.String(),
		ImageDigest: m.Image.Digest.String(), Version: m.Version, Entry: file, Options: rec.Entry.Options,
	}
	if o, err := s.readOrigin(*d); err == nil {
		res.Origin = o.Ref
	}
	for _, k := range vres.KeyIDs {
		res.KeyIDs = append(res.KeyIDs, k.String())
	}
	if swapped {
		if rmErr := s.removeStaged(); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	return res, err
}

// RollbackResult describes a rollback.
type RollbackResult struct {
	// Default is the deployment now booted by default, Previous the one
	// that was.
	Default  string `json:"default"`
	Previous string `json:"previous"`
	Entry    string `json:"entry"`
}

// Rollback makes the rollback deployment (the second in boot order) the
// default, keeping every entry. Its entry is rewritten under a new, higher
// serial; a boot counter it had is reset to a fresh one (the administrator
// asked for it explicitly), a blessed entry stays blessed. A staged
// deployment is discarded, since finalizing it would undo the rollback.
func (s *Sysroot) Rollback(ctx context.Context) (*RollbackResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	cur, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	cfs := cfsEntries(cur)
	if len(cfs) < 2 {
		return nil, fmt.Errorf("%w: there is no rollback deployment", ErrNoDeployment)
	}
	target := cfs[1]
	serial := maxSerial(cur) + 1
	e := *target.Entry
	e.Version = strconv.Itoa(serial)
	file := EntryPrefix + strconv.Itoa(serial) + bls.Suffix
	if target.Name.HasCounter {
		file = newEntryName(serial)
	}
	planned := []plannedEntry{{File: file, Entry: &e}}
	for _, c := range cur {
		if c != target {
			planned = append(planned, planKept(c))
		}
	}
	mid := readMachineID(filepath.Join(s.deployDir(*target.Dep), EtcDir))
	if mid == "" {
		mid = entryMachineID(cur)
	}
	swapped, err := s.swapEntries(ctx, planned, mid, file)
	if swapped {
		if rmErr := s.removeStaged(); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	if err != nil {
		return nil, err
	}
	return &RollbackResult{Default: target.Dep.Path(), Previous: cfs[0].Dep.Path(), Entry: file}, nil
}

// Upgrade deploys the newest commit of the ref the booted (else default)
// deployment follows, as Switch does. When the default (or staged)
// deployment already has that commit it changes nothing and says so.
// Upgrade does not fetch: pull first.
func (s *Sysroot) Upgrade(ctx context.Context, opts SwitchOptions) (*SwitchResult, error) {
	l, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	booted, err := s.booted()
	if err != nil {
		return nil, err
	}
	cfs := cfsEntries(entries)
	from := booted
	if from == nil && len(cfs) > 0 {
		from = cfs[0].Dep
	}
	if from == nil {
		return nil, fmt.Errorf("%w: nothing is deployed to upgrade (use switch)", ErrNoDeployment)
	}
	origin, err := s.readOrigin(*from)
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", from, err)
	}
	if origin.Ref == "" {
		return nil, fmt.Errorf("deployment %s follows no ref (use switch)", from)
	}
	id, err := s.repo.ReadRef(origin.Ref)
	if err != nil {
		return nil, err
	}
	next := (*Deployment)(nil)
	if len(cfs) > 0 {
		next = cfs[0].Dep
	}
	if _, staged, err := s.readStaged(); err != nil {
		return nil, err
	} else if staged != nil {
		next = staged
	}
	if next != nil && next.Commit == id {
		m, _, _, err := s.readDeploymentCommit(*next)
		res := &SwitchResult{Changed: false, Stateroot: next.Stateroot, Deployment: next.Path(), Commit: id.String(), Origin: origin.Ref,
			Message: fmt.Sprintf("already on the newest commit of %s (%s)", origin.Ref, id.Short())}
		if err == nil {
			res.ImageDigest, res.Version = m.Image.Digest.String(), m.Version
		}
		return res, nil
	}
	if opts.Stateroot == "" {
		opts.Stateroot = from.Stateroot
	}
	return s.doSwitch(ctx, origin.Ref, opts)
}

// Pin marks the deployment at index (of Status) as pinned (kept by
// switch and cleanup), or unpins it.
func (s *Sysroot) Pin(ctx context.Context, index int, pin bool) error {
	l, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer l.Unlock()
	st, err := s.status(ctx)
	if err != nil {
		return err
	}
	if index < 0 || index >= len(st.Deployments) {
		return fmt.Errorf("%w: index %d (there are %d deployments)", ErrNoDeployment, index, len(st.Deployments))
	}
	ds := st.Deployments[index]
	if ds.Staged {
		return errors.New("a staged deployment cannot be pinned (finalize it first)")
	}
	d, err := ParseDeploymentPath(ds.Deployment)
	if err != nil {
		return err
	}
	return s.setPinned(d, pin)
}
