package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	v1 "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// maxKeyFileSize bounds key files read from disk.
const maxKeyFileSize = 64 << 10

// KeyType names a kind of key [Keygen] can make.
type KeyType string

// Key types for [Keygen].
const (
	KeyEd25519   KeyType = "ed25519"
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyRSA3072   KeyType = "rsa-3072"

	// DefaultKeyType is used when the key type is empty.
	DefaultKeyType = KeyEd25519
)

// KeyTypes lists the key types [Keygen] accepts, default first.
func KeyTypes() []KeyType { return []KeyType{KeyEd25519, KeyECDSAP256, KeyRSA3072} }

// ParseKeyType parses a key type name; "" gives [DefaultKeyType].
func ParseKeyType(s string) (KeyType, error) {
	if s == "" {
		return DefaultKeyType, nil
	}
	for _, k := range KeyTypes() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w: unknown key type %q (want one of ed25519, ecdsa-p256, rsa-3072)", ErrUnsupportedKey, s)
}

// rsaKeygenBits is the RSA modulus size Keygen uses.
const rsaKeygenBits = 3072

// allowedAlgorithms is the signing algorithm allowlist, in sigstore's
// algorithm registry terms.
var allowedAlgorithms = mustRegistry(
	v1.PublicKeyDetails_PKIX_ED25519,
	v1.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256,
	v1.PublicKeyDetails_PKIX_RSA_PKCS1V15_2048_SHA256,
	v1.PublicKeyDetails_PKIX_RSA_PKCS1V15_3072_SHA256,
	v1.PublicKeyDetails_PKIX_RSA_PKCS1V15_4096_SHA256,
)

func mustRegistry(algs ...v1.PublicKeyDetails) *signature.AlgorithmRegistryConfig {
	r, err := signature.NewAlgorithmRegistryConfig(algs)
	if err != nil {
		panic("sign: bad algorithm allowlist: " + err.Error())
	}
	return r
}

// KeyID identifies a public key: the SHA-256 of its DER SubjectPublicKeyInfo.
type KeyID [32]byte

// String returns the 64-character lowercase hex form.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler.
func (id KeyID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *KeyID) UnmarshalText(b []byte) error {
	p, err := ParseKeyID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseKeyID parses 64 lowercase hex characters.
func ParseKeyID(s string) (KeyID, error) {
	var id KeyID
	if len(s) != 2*len(id) || strings.ToLower(s) != s {
		return id, fmt.Errorf("invalid key id %q: want 64 lowercase hex characters", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid key id %q: %w", s, err)
	}
	return id, nil
}

// KeyIDOf computes the key id of any public key Go can marshal as PKIX,
// allowed or not.
func KeyIDOf(pub crypto.PublicKey) (KeyID, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KeyID{}, fmt.Errorf("%w: marshal public key: %w", ErrUnsupportedKey, err)
	}
	return sha256.Sum256(der), nil
}

// describeKey names a key's algorithm and size for error messages.
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", k.Size()*8)
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// PublicKey is a parsed public key that passed the allowlist, with its id
// and a sigstore verifier.
type PublicKey struct {
	key      crypto.PublicKey
	id       KeyID
	details  signature.AlgorithmDetails
	alg      string
	verifier signature.Verifier
}

// NewPublicKey checks pub against the allowlist and prepares a verifier.
func NewPublicKey(pub crypto.PublicKey) (*PublicKey, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: nil public key", ErrInvalidKey)
	}
	if k, isRSA := pub.(*rsa.PublicKey); isRSA && (k == nil || k.N == nil) {
		return nil, fmt.Errorf("%w: RSA public key without a modulus", ErrInvalidKey)
	}
	if k, isEC := pub.(*ecdsa.PublicKey); isEC && (k == nil || k.Curve == nil) {
		return nil, fmt.Errorf("%w: ECDSA public key without a curve", ErrInvalidKey)
	}
	if k, isEd := pub.(ed25519.PublicKey); isEd && len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrInvalidKey, len(k))
	}
	details, err := signature.GetDefaultAlgorithmDetails(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, describeKey(pub))
	}
	ok, err := allowedAlgorithms.IsAlgorithmPermitted(pub, details.GetHashType())
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, describeKey(pub))
	}
	if k, isEC := pub.(*ecdsa.PublicKey); isEC {
		if k.X == nil || k.Y == nil { //nolint:staticcheck // only checking presence
			return nil, fmt.Errorf("%w: ECDSA public key without a point", ErrInvalidKey)
		}
		if _, err := k.ECDH(); err != nil {
			return nil, fmt.Errorf("%w: ECDSA public key: %w", ErrInvalidKey, err)
		}
	}
	id, err := KeyIDOf(pub)
	if err != nil {
		return nil, err
	}
	v, err := signature.LoadVerifierFromAlgorithmDetails(pub, details)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrUnsupportedKey, id, err)
	}
	alg, err := signature.FormatSignatureAlgorithmFlag(details.GetSignatureAlgorithm())
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrUnsupportedKey, id, err)
	}
	return &PublicKey{key: pub, id: id, details: details, alg: alg, verifier: v}, nil
}

// parsePublicKeyAny decodes exactly one PEM "PUBLIC KEY" (PKIX) block, of
// any key algorithm, without the allowlist check.
func parsePublicKeyAny(pemBytes []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the first PEM block (one key per file)", ErrInvalidKey)
	}
	if block.Type != string(cryptoutils.PublicKeyPEMType) {
		return nil, fmt.Errorf("%w: PEM type %q, want %q", ErrInvalidKey, block.Type, cryptoutils.PublicKeyPEMType)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return pub, nil
}

// ParsePublicKey decodes one PEM "PUBLIC KEY" (PKIX) block and checks it
// against the allowlist.
func ParsePublicKey(pemBytes []byte) (*PublicKey, error) {
	pub, err := parsePublicKeyAny(pemBytes)
	if err != nil {
		return nil, err
	}
	return NewPublicKey(pub)
}

// LoadPublicKey reads a PEM public key file.
func LoadPublicKey(path string) (*PublicKey, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// ID returns the key id.
func (k *PublicKey) ID() KeyID { return k.id }

// Algorithm returns the sigstore algorithm name, e.g. "ed25519",
// "ecdsa-sha2-256-nistp256" or "rsa-sign-pkcs1-3072-sha256".
func (k *PublicKey) Algorithm() string { return k.alg }

// Key returns the underlying crypto public key.
func (k *PublicKey) Key() crypto.PublicKey { return k.key }

// MarshalPEM encodes the key as PEM "PUBLIC KEY".
func (k *PublicKey) MarshalPEM() ([]byte, error) {
	return cryptoutils.MarshalPublicKeyToPEM(k.key)
}

// verify checks sig over msg with sigstore's verifier.
func (k *PublicKey) verify(msg, sig []byte) error {
	return k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg))
}

// PasswordFunc supplies the password of an encrypted private key. It is
// called only when the key is encrypted.
type PasswordFunc func() ([]byte, error)

// StaticPassword returns a PasswordFunc that always returns pw.
func StaticPassword(pw []byte) PasswordFunc {
	return func() ([]byte, error) { return pw, nil }
}

// Signer signs with one private key.
type Signer struct {
	pub    *PublicKey
	signer signature.Signer
}

// NewSigner wraps a private key after checking its public half against the
// allowlist.
func NewSigner(priv crypto.PrivateKey) (*Signer, error) {
	cs, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not a signing key", ErrUnsupportedKey, priv)
	}
	pub, err := NewPublicKey(cs.Public())
	if err != nil {
		return nil, err
	}
	s, err := signature.LoadSignerFromAlgorithmDetails(priv, pub.details)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrUnsupportedKey, pub.id, err)
	}
	return &Signer{pub: pub, signer: s}, nil
}

// ParseSigner decodes a PEM private key, decrypting it with pass when it is
// a cosign/sigstore encrypted key, and checks it against the allowlist. pass
// is called only for encrypted keys; a nil pass then gives
// [ErrPasswordRequired], and a nil password from pass means the empty
// password.
func ParseSigner(pemBytes []byte, pass PasswordFunc) (*Signer, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the first PEM block (one key per file)", ErrInvalidKey)
	}
	var priv crypto.PrivateKey
	var err error
	switch block.Type {
	case string(cryptoutils.EncryptedSigstorePrivateKeyPEMType), "ENCRYPTED COSIGN PRIVATE KEY":
		if pass == nil {
			return nil, ErrPasswordRequired
		}
		pw, perr := pass()
		if perr != nil {
			return nil, fmt.Errorf("read password: %w", perr)
		}
		if pw == nil {
			// cryptoutils skips decryption for a nil password; an empty
			// password is a valid (if weak) cosign password.
			pw = []byte{}
		}
		priv, err = cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, cryptoutils.StaticPasswordFunc(pw))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrWrongPassword, err)
		}
	case string(cryptoutils.PrivateKeyPEMType), string(cryptoutils.ECPrivateKeyPEMType), string(cryptoutils.PKCS1PrivateKeyPEMType):
		priv, err = cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
		}
	default:
		return nil, fmt.Errorf("%w: unsupported private key PEM type %q", ErrInvalidKey, block.Type)
	}
	return NewSigner(priv)
}

// LoadSigner reads a PEM private key file; see [ParseSigner].
func LoadSigner(path string, pass PasswordFunc) (*Signer, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseSigner(b, pass)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return s, nil
}

// KeyID returns the id of the signer's public key.
func (s *Signer) KeyID() KeyID { return s.pub.id }

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() *PublicKey { return s.pub }

// Keygen makes a new key pair of the given kind ("" means the default,
// Ed25519). The private key is PEM "ENCRYPTED SIGSTORE PRIVATE KEY" (the
// format of `cosign generate-key-pair`) when password is non-empty, and
// unencrypted PKCS #8 "PRIVATE KEY" otherwise. The public key is PEM
// "PUBLIC KEY" (PKIX).
func Keygen(kind KeyType, password []byte) (privPEM, pubPEM []byte, err error) {
	if kind == "" {
		kind = DefaultKeyType
	}
	var priv crypto.Signer
	switch kind {
	case KeyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case KeyECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA3072:
		priv, err = rsa.GenerateKey(rand.Reader, rsaKeygenBits)
	default:
		_, err = ParseKeyType(string(kind))
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	if _, err := NewSigner(priv); err != nil {
		return nil, nil, fmt.Errorf("generated %s key: %w", kind, err)
	}
	pubPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("marshal public key: %w", err)
	}
	if len(password) == 0 {
		privPEM, err = cryptoutils.MarshalPrivateKeyToPEM(priv)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal private key: %w", err)
		}
		return privPEM, pubPEM, nil
	}
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt private key: %w", err)
	}
	return cryptoutils.PEMEncode(cryptoutils.EncryptedSigstorePrivateKeyPEMType, der), pubPEM, nil
}

// WriteKeyPair writes prefix+".key" (mode 0600) and prefix+".pub" (mode
// 0644), each atomically, and returns their paths. It refuses (with an error
// matching fs.ErrExist) to overwrite either file, and removes the private
// key again if the public key cannot be written.
func WriteKeyPair(prefix string, privPEM, pubPEM []byte) (keyPath, pubPath string, err error) {
	if prefix == "" {
		return "", "", errors.New("empty key file prefix")
	}
	keyPath, pubPath = prefix+".key", prefix+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("refusing to overwrite %s: %w", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("stat %s: %w", p, err)
		}
	}
	if err := atomicfile.WriteFile(keyPath, privPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := atomicfile.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		if rmErr := os.Remove(keyPath); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("roll back %s: %w", keyPath, rmErr))
		}
		return "", "", err
	}
	return keyPath, pubPath, nil
}

// readKeyFile reads a small file, refusing anything larger than
// maxKeyFileSize or not a regular file.
func readKeyFile(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO would block.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidKey, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidKey, path, maxKeyFileSize)
	}
	return b, nil
}
