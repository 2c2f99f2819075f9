package deploy

import (
	"context"
	"errors"

	"github.com/cfs-dev/cfs/commit/pull"
	"github.com/cfs-dev/cfs/commit/sign"
)

// Status is what `cfs-deploy status --json` prints. The schema is stable
// and documented in docs/deployments.md.
type Status struct {
	Deployments []DeploymentStatus `json:"deployments"`
	// TPM is the TPM state (mode, counter, measured PCR, booted digest);
	// the CLI fills it (it owns the TPM transport), Status leaves it nil.
	TPM *TPMStatus `json:"tpm,omitempty"`
}

// DeploymentStatus is one deployment, in boot order: a staged deployment
// first (it becomes the default at shutdown), then the cfs boot entries as
// the boot loader orders them (default first).
type DeploymentStatus struct {
	Index       int    `json:"index"`
	Stateroot   string `json:"stateroot"`
	Deployment  string `json:"deployment"` // the cfs.deployment= path
	Serial      int    `json:"serial"`
	Commit      string `json:"commit"`
	ImageDigest string `json:"image-digest"`
	Version     string `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	Origin      string `json:"origin"` // the ref upgrade follows
	Booted      bool   `json:"booted"`
	Staged      bool   `json:"staged"`
	// Pending: the next boot uses it but it is not booted (staged, or
	// default while another deployment is booted).
	Pending  bool `json:"pending"`
	Default  bool `json:"default"`
	Rollback bool `json:"rollback"`
	Pinned   bool `json:"pinned"`
	// Signature is re-verified against the trust store at status time.
	Signature SignatureStatus `json:"signature"`
	// BootCounter is the entry's Automatic Boot Assessment state (nil
	// for a staged deployment, which has no entry yet).
	BootCounter *BootCounter `json:"boot-counter"`
	Entry       string       `json:"entry"`   // entry file name ("" when staged)
	Options     string       `json:"options"` // kernel command line
	Kernel      string       `json:"kernel-version"`
}

// SignatureStatus is the result of re-verifying a deployment's commit.
type SignatureStatus struct {
	Valid  bool     `json:"valid"`
	KeyIDs []string `json:"key-ids"`
	Error  string   `json:"error,omitempty"`
}

// BootCounter is the boot counting state of an entry's file name.
type BootCounter struct {
	// State is "blessed" (no counter: booted successfully, or never
	// counted), "indeterminate" (tries left) or "bad" (+0: the boot
	// loader moves it last).
	State     string `json:"state"`
	TriesLeft *int   `json:"tries-left,omitempty"`
	TriesDone *int   `json:"tries-done,omitempty"`
}

// Status reports the deployments (see DeploymentStatus).
func (s *Sysroot) Status(ctx context.Context) (*Status, error) {
	return s.status(ctx)
}

func (s *Sysroot) status(ctx context.Context) (*Status, error) {
	entries, err := s.loadEntries(ctx)
	if err != nil {
		return nil, err
	}
	booted, err := s.booted()
	if err != nil {
		return nil, err
	}
	trust, trustErr := s.trustStore()
	st := &Status{Deployments: []DeploymentStatus{}}
	rec, staged, err := s.readStaged()
	if err != nil {
		return nil, err
	}
	if staged != nil {
		ds := s.describe(*staged, trust, trustErr)
		ds.Staged, ds.Pending = true, true
		ds.Options = rec.Entry.Options
		st.Deployments = append(st.Deployments, ds)
	}
	for i, e := range cfsEntries(entries) {
		ds := s.describe(*e.Dep, trust, trustErr)
		ds.Default = i == 0
		ds.Rollback = i == 1
		ds.Entry = e.File
		ds.Options = e.Entry.Cmdline()
		ds.BootCounter = bootCounter(e)
		if ds.ImageDigest == "" && e.Boot.Composefs != nil {
			ds.ImageDigest = e.Boot.Composefs.Hex()
		}
		st.Deployments = append(st.Deployments, ds)
	}
	for i := range st.Deployments {
		ds := &st.Deployments[i]
		ds.Index = i
		if booted != nil && ds.Deployment == booted.Path() && !ds.Staged {
			ds.Booted = true
		}
		if ds.Default && booted != nil && !ds.Booted {
			ds.Pending = true
		}
	}
	return st, nil
}

// describe fills what a deployment's own directory says.
func (s *Sysroot) describe(d Deployment, trust *sign.TrustStore, trustErr error) DeploymentStatus {
	ds := DeploymentStatus{
		Stateroot: d.Stateroot, Deployment: d.Path(), Serial: d.Serial, Commit: d.Commit.String(),
		Pinned: s.isPinned(d), Signature: SignatureStatus{KeyIDs: []string{}},
	}
	if o, err := s.readOrigin(d); err == nil {
		ds.Origin = o.Ref
	}
	m, canonical, envelope, err := s.readDeploymentCommit(d)
	if err != nil {
		ds.Signature.Error = err.Error()
		return ds
	}
	ds.ImageDigest, ds.Version, ds.Timestamp = m.Image.Digest.String(), m.Version, m.Timestamp
	if m.Kernel != nil {
		ds.Kernel = m.Kernel.Version
	}
	if trustErr != nil {
		ds.Signature.Error = trustErr.Error()
		return ds
	}
	res, err := pull.VerifyCommit(canonical, envelope, trust)
	if err != nil {
		var ve *sign.VerificationError
		if errors.As(err, &ve) && ve.Reason != nil {
			ds.Signature.Error = ve.Reason.Error()
			ds.Signature.KeyIDs = append(ds.Signature.KeyIDs, ve.KeyIDs...)
		} else {
			ds.Signature.Error = err.Error()
		}
		return ds
	}
	ds.Signature.Valid = true
	for _, k := range res.KeyIDs {
		ds.Signature.KeyIDs = append(ds.Signature.KeyIDs, k.String())
	}
	return ds
}

func bootCounter(e *bootEntry) *BootCounter {
	n := e.Name
	switch {
	case !n.HasCounter:
		return &BootCounter{State: "blessed"}
	case n.Bad():
		left, done := 0, n.Done
		return &BootCounter{State: "bad", TriesLeft: &left, TriesDone: &done}
	}
	left, done := n.Left, n.Done
	return &BootCounter{State: "indeterminate", TriesLeft: &left, TriesDone: &done}
}
