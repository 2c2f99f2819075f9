package sign

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// TrustOptions configures [LoadTrustStore].
type TrustOptions struct {
	// Threshold is how many distinct trusted keys must have signed; 0 means 1.
	Threshold int
	// RevokedDir, if set, is a directory whose *.pub files are revoked
	// public keys. Keys of any parseable type are accepted here (a revoked
	// weak key is still revoked).
	RevokedDir string
	// RevokedFile, if set, lists revoked key ids: one 64-character hex
	// [KeyID] per line; blank lines and text after '#' are ignored.
	RevokedFile string
}

// TrustStore is the set of keys [Verify] accepts, the revoked keys, and the
// signature threshold. It is immutable once built.
type TrustStore struct {
	trusted     []*PublicKey // sorted by id, none revoked
	revokedKeys []*PublicKey // revoked keys we can verify with, sorted by id
	revokedIDs  []KeyID      // every revoked id, sorted
	threshold   int
}

// NewTrustStore builds a trust store. Keys listed in revokedKeys or
// revokedIDs are revoked even when they also appear in trusted. Threshold 0
// means 1; a threshold larger than the number of distinct usable trusted
// keys is an error, since nothing could ever verify.
func NewTrustStore(trusted, revokedKeys []*PublicKey, revokedIDs []KeyID, threshold int) (*TrustStore, error) {
	if threshold < 0 {
		return nil, fmt.Errorf("trust store: negative threshold %d", threshold)
	}
	if threshold == 0 {
		threshold = 1
	}
	t := &TrustStore{threshold: threshold}
	seen := map[KeyID]bool{}
	for _, k := range revokedKeys {
		if k == nil {
			return nil, errors.New("trust store: nil revoked key")
		}
		if !seen[k.id] {
			seen[k.id] = true
			t.revokedKeys = append(t.revokedKeys, k)
		}
	}
	revoked := map[KeyID]bool{}
	for _, k := range t.revokedKeys {
		revoked[k.id] = true
	}
	for _, id := range revokedIDs {
		revoked[id] = true
	}
	for _, k := range trusted {
		if k == nil {
			return nil, errors.New("trust store: nil trusted key")
		}
		if revoked[k.id] {
			if !seen[k.id] {
				// Revoked by id only: keep the key so that signatures
				// without a keyid hint are still recognised as revoked.
				seen[k.id] = true
				t.revokedKeys = append(t.revokedKeys, k)
			}
			continue
		}
		if !seen[k.id] {
			seen[k.id] = true
			t.trusted = append(t.trusted, k)
		}
	}
	for id := range revoked {
		t.revokedIDs = append(t.revokedIDs, id)
	}
	byID := func(a, b *PublicKey) int { return bytes.Compare(a.id[:], b.id[:]) }
	slices.SortFunc(t.trusted, byID)
	slices.SortFunc(t.revokedKeys, byID)
	slices.SortFunc(t.revokedIDs, func(a, b KeyID) int { return bytes.Compare(a[:], b[:]) })
	if len(t.trusted) < threshold {
		return nil, fmt.Errorf("trust store: threshold %d but only %d usable trusted keys (%d revoked)",
			threshold, len(t.trusted), len(t.revokedIDs))
	}
	return t, nil
}

// LoadTrustStore reads every *.pub file in dir as a trusted key (see
// [TrustOptions] for revocation). A file that cannot be read, parsed or is
// not on the allowlist is an error; files with other names are ignored.
func LoadTrustStore(dir string, opts TrustOptions) (*TrustStore, error) {
	trusted, err := loadKeyDir(dir, false)
	if err != nil {
		return nil, err
	}
	if len(trusted) == 0 {
		return nil, fmt.Errorf("trust store %s: no *.pub keys", dir)
	}
	var revokedKeys []*PublicKey
	var revokedIDs []KeyID
	if opts.RevokedDir != "" {
		ks, err := loadKeyDir(opts.RevokedDir, true)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if k.verifier != nil {
				revokedKeys = append(revokedKeys, k)
			} else {
				revokedIDs = append(revokedIDs, k.id)
			}
		}
	}
	if opts.RevokedFile != "" {
		ids, err := loadRevokedFile(opts.RevokedFile)
		if err != nil {
			return nil, err
		}
		revokedIDs = append(revokedIDs, ids...)
	}
	t, err := NewTrustStore(trusted, revokedKeys, revokedIDs, opts.Threshold)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return t, nil
}

// loadKeyDir parses every *.pub in dir. With anyKey, keys outside the
// allowlist are returned with only their id (verifier nil).
func loadKeyDir(dir string, anyKey bool) ([]*PublicKey, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read key directory: %w", err)
	}
	var keys []*PublicKey
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pub") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := readKeyFile(p)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", p, err)
		}
		pub, err := parsePublicKeyAny(b)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", p, err)
		}
		k, err := NewPublicKey(pub)
		if err != nil {
			if !anyKey || !errors.Is(err, ErrUnsupportedKey) {
				return nil, fmt.Errorf("key %s: %w", p, err)
			}
			id, idErr := KeyIDOf(pub)
			if idErr != nil {
				return nil, fmt.Errorf("key %s: %w", p, idErr)
			}
			k = &PublicKey{key: pub, id: id}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func loadRevokedFile(path string) ([]KeyID, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("revoked key list: %w", err)
	}
	var ids []KeyID
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id, err := ParseKeyID(line)
		if err != nil {
			return nil, fmt.Errorf("revoked key list %s:%d: %w", path, n, err)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("revoked key list %s: %w", path, err)
	}
	return ids, nil
}

// Threshold returns how many distinct trusted keys must sign.
func (t *TrustStore) Threshold() int { return t.threshold }

// Keys returns the trusted (non-revoked) keys, sorted by id.
func (t *TrustStore) Keys() []*PublicKey { return slices.Clone(t.trusted) }

// RevokedIDs returns every revoked key id, sorted.
func (t *TrustStore) RevokedIDs() []KeyID { return slices.Clone(t.revokedIDs) }

// IsRevoked reports whether id is revoked.
func (t *TrustStore) IsRevoked(id KeyID) bool {
	found := 0
	for _, r := range t.revokedIDs {
		found |= subtle.ConstantTimeCompare(r[:], id[:])
	}
	return found == 1
}

// lookup returns the trusted key with this id, or nil. Every key is
// compared, in constant time.
func (t *TrustStore) lookup(id KeyID) *PublicKey {
	var match *PublicKey
	for _, k := range t.trusted {
		if subtle.ConstantTimeCompare(k.id[:], id[:]) == 1 {
			match = k
		}
	}
	return match
}
