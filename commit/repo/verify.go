package repo

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/composefs"
	"github.com/cfs-dev/cfs/composefs/dump"
	"github.com/cfs-dev/cfs/composefs/erofs"
	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// Verification failures, beside sign's (*sign.VerificationError).
var (
	// ErrPayloadMismatch: the signed payload is not the stored commit.
	ErrPayloadMismatch = errors.New("signed payload differs from the stored commit")
	// ErrImageMismatch: the image regenerated from the stored dump does
	// not have the signed digest.
	ErrImageMismatch = errors.New("regenerated image digest differs from the signed digest")
)

// VerifyResult describes a verified commit.
type VerifyResult struct {
	Commit   commit.ID
	Metadata *commit.Metadata
	KeyIDs   []string
}

// VerifySignature checks the stored signature of a commit against trust
// and that it signs exactly the stored metadata bytes.
func (r *Repo) VerifySignature(id commit.ID, trust *sign.TrustStore) (*VerifyResult, error) {
	m, canonical, err := r.ReadCommit(id)
	if err != nil {
		return nil, err
	}
	raw, err := r.ReadSignature(id)
	if err != nil {
		return nil, err
	}
	env, err := sign.ParseEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	payload, res, err := sign.Verify(env, commit.PayloadType, trust)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	if len(payload) != len(canonical) || subtle.ConstantTimeCompare(payload, canonical) != 1 {
		return nil, fmt.Errorf("commit %s: %w", id, ErrPayloadMismatch)
	}
	out := &VerifyResult{Commit: id, Metadata: m}
	for _, k := range res.KeyIDs {
		out.KeyIDs = append(out.KeyIDs, k.String())
	}
	return out, nil
}

// LoadTree reads a commit's stored dump (checking the dump object's digest
// against the metadata) and parses it.
func (r *Repo) LoadTree(ctx context.Context, m *commit.Metadata) (*composefs.Node, error) {
	f, err := r.Objects.Open(m.Dump.Digest)
	if err != nil {
		return nil, fmt.Errorf("dump object: %w", err)
	}
	defer f.Close()
	h := fsverity.NewHasher(fsverity.SHA256)
	root, perr := dump.Parse(io.TeeReader(f, h), dump.ParseOptions{})
	// Hash whatever Parse left unread, so that a tampered dump is reported
	// as such rather than as whatever parse error the tampering caused.
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("dump object %s: %w", m.Dump.Digest, err)
	}
	if got := h.Digest(); got != m.Dump.Digest {
		return nil, &objstore.CorruptObjectError{Path: r.Objects.Path(m.Dump.Digest), Digest: m.Dump.Digest, Found: got}
	}
	if perr != nil {
		return nil, fmt.Errorf("dump object %s: %w", m.Dump.Digest, perr)
	}
	return root, nil
}

// RegenerateImage writes the commit's image from its stored dump to w and
// checks its digest against the signed one.
func (r *Repo) RegenerateImage(ctx context.Context, m *commit.Metadata, w io.Writer) error {
	root, err := r.LoadTree(ctx, m)
	if err != nil {
		return err
	}
	d, err := erofs.Write(w, root, erofs.DefaultWriteOptions())
	if err != nil {
		return fmt.Errorf("regenerate image: %w", err)
	}
	if d != m.Image.Digest {
		return fmt.Errorf("%w: signed %s, regenerated %s", ErrImageMismatch, m.Image.Digest, d)
	}
	return nil
}

// VerifyCommit checks a commit completely: signature against trust, the
// image regenerated from the stored dump has the signed digest, and the
// stored image object is intact.
func (r *Repo) VerifyCommit(ctx context.Context, id commit.ID, trust *sign.TrustStore) (*VerifyResult, error) {
	res, err := r.VerifySignature(id, trust)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := r.RegenerateImage(ctx, res.Metadata, &buf); err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	if err := r.Objects.Verify(ctx, res.Metadata.Image.Digest); err != nil {
		return nil, fmt.Errorf("commit %s: image object: %w", id, err)
	}
	return res, nil
}
