package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/sign"
	"github.com/cfs-dev/cfs/internal/atomicfile"
	"github.com/cfs-dev/cfs/internal/lockfile"
)

// SummaryPayloadType is the DSSE payload type of the signed summary.
const SummaryPayloadType = "application/vnd.cfs.summary.v1+json"

// Summary lists the refs of a repository for clients.
type Summary struct {
	Schema string                  `json:"schema"`
	Refs   map[string]SummaryEntry `json:"refs"`
	// Timestamp is the newest commit timestamp among the refs, so that
	// the summary is a deterministic function of the refs.
	Timestamp int64 `json:"timestamp"`
}

// SummaryEntry is one ref in the summary.
type SummaryEntry struct {
	Commit        commit.ID `json:"commit"`
	RollbackIndex uint64    `json:"rollback-index"`
	Timestamp     int64     `json:"timestamp"`
	Version       string    `json:"version,omitempty"`
}

// BuildSummary computes the summary of the current refs.
func (r *Repo) BuildSummary() (*Summary, error) {
	refs, err := r.Refs()
	if err != nil {
		return nil, err
	}
	s := &Summary{Schema: "cfs.summary.v1", Refs: make(map[string]SummaryEntry, len(refs))}
	for _, ref := range refs {
		m, _, err := r.ReadCommit(ref.Commit)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", ref.Name, err)
		}
		s.Refs[ref.Name] = SummaryEntry{Commit: ref.Commit, RollbackIndex: m.RollbackIndex, Timestamp: m.Timestamp, Version: m.Version}
		if m.Timestamp > s.Timestamp {
			s.Timestamp = m.Timestamp
		}
	}
	return s, nil
}

// UpdateSummary rewrites the signed summary from the current refs.
func (r *Repo) UpdateSummary(ctx context.Context, signers []*sign.Signer) error {
	lock, err := lockSummary(ctx, r)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	s, err := r.BuildSummary()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	env, err := sign.Sign(ctx, SummaryPayloadType, buf.Bytes(), signers...)
	if err != nil {
		return fmt.Errorf("sign summary: %w", err)
	}
	b, err := env.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(r.root, SummaryFile), b, 0o644)
}

// ReadSummary verifies the signed summary against trust and returns it.
func (r *Repo) ReadSummary(trust *sign.TrustStore) (*Summary, error) {
	b, err := readBounded(filepath.Join(r.root, SummaryFile), MaxSignatureSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s has no summary: %w", r.root, err)
	}
	if err != nil {
		return nil, err
	}
	env, err := sign.ParseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("summary: %w", err)
	}
	payload, _, err := sign.Verify(env, SummaryPayloadType, trust)
	if err != nil {
		return nil, fmt.Errorf("summary: %w", err)
	}
	var s Summary
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("summary: %w", err)
	}
	return &s, nil
}

func lockSummary(ctx context.Context, r *Repo) (*lockfile.Lock, error) {
	return lockfile.Exclusive(ctx, filepath.Join(r.root, LocksDir, "summary.lock"))
}
