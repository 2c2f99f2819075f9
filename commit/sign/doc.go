// Package sign signs and verifies cfs commit metadata as DSSE envelopes
// (https://github.com/secure-systems-lab/dsse), with local keys handled by
// github.com/sigstore/sigstore. It is generic over the payload: the commit
// package passes its canonical JSON bytes and the payload type
// "application/vnd.cfs.commit.v1+json".
//
// # Envelope
//
// An envelope is the standard DSSE JSON document
//
//	{"payloadType": "...", "payload": "<base64>", "signatures": [{"keyid": "...", "sig": "<base64>"}]}
//
// where every signature is over PAE(payloadType, payload) =
// "DSSEv1 <len(type)> <type> <len(payload)> <payload>". Base64 is standard
// padded encoding, decoded strictly. [ParseEnvelope] is strict as well:
// exactly these field names (case-sensitive), no duplicate or unknown
// fields, no trailing data, bounded sizes ([MaxEnvelopeSize],
// [MaxPayloadSize], [MaxSignatures]).
//
// The envelope is built here rather than with sigstore's dsse.WrapSigner /
// WrapMultiVerifier. The signing and verifying primitives are still
// sigstore's (signature.LoadSignerFromAlgorithmDetails and
// LoadVerifierFromAlgorithmDetails behind its algorithm registry), but the
// wrappers (sigstore v1.10.4 over go-securesystemslib's dsse) do not give
// what a fail-closed boot verifier needs: WrapSigner writes no key id,
// WrapMultiVerifier ignores the payload type, silently skips invalid
// signatures, cannot express revocation, returns one untyped error without
// the key ids involved, accepts URL-safe base64, and its go-securesystemslib
// core prints to stdout. The formats stay compatible: envelopes made by
// WrapSigner and WrapMultiSigner verify here, and ours verify with
// WrapVerifier/WrapMultiVerifier once their keyids are cleared (those treat
// a keyid as binding and expect their own SSH-fingerprint ids); the tests
// check both directions.
//
// # Keys
//
// Allowed algorithms form an allowlist, checked with sigstore's
// AlgorithmRegistryConfig whenever a key is loaded, before any use:
//
//   - Ed25519, pure (not Ed25519ph); the default for [Keygen].
//   - ECDSA on NIST P-256 with SHA-256 (ASN.1 signatures).
//   - RSA 2048, 3072 or 4096 bits, PKCS #1 v1.5 with SHA-256. [Keygen] makes
//     3072-bit keys. PKCS #1 v1.5 rather than PSS because it is what sigstore
//     and cosign load by default for RSA keys, so signatures interoperate
//     with their tooling; its signatures are deterministic and have no known
//     practical weakness for signing (the padding-oracle attacks concern
//     encryption).
//
// Anything else (RSA below 2048 or of odd sizes, other curves, DSA, ...)
// fails with [ErrUnsupportedKey].
//
// Private keys are PEM: unencrypted PKCS #8 ("PRIVATE KEY"; SEC 1 and
// PKCS #1 are also read), or the cosign/sigstore encrypted formats
// ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY": scrypt
// + NaCl secretbox over PKCS #8), decoded by
// cryptoutils.UnmarshalPEMToPrivateKey. A password that does not decrypt the
// key gives [ErrWrongPassword]. Public keys are PEM "PUBLIC KEY" (PKIX), one
// per file.
//
// # Key ids
//
// A [KeyID] is the SHA-256 of the key's DER SubjectPublicKeyInfo (PKIX), in
// lowercase hex: `openssl pkey -pubin -in k.pub -outform DER | sha256sum`
// prints it. It is written in each signature's keyid and used in errors.
// In an envelope the keyid is an unauthenticated hint: when it names a key
// of the trust store only that key is tried; when it is empty or in another
// format (sigstore's WrapMultiSigner writes SSH fingerprints) every trusted
// and revoked key is tried.
//
// # Trust and verification
//
// A [TrustStore] holds trusted public keys, revoked keys and a threshold.
// [LoadTrustStore] reads every *.pub file of a directory (a file that does
// not parse or is not allowed is an error, never skipped), plus optionally a
// directory of revoked *.pub keys and/or a file of revoked key ids (one hex
// id per line, '#' comments). A trusted key that is also revoked is
// revoked.
//
// [Verify] fails closed, with a [*VerificationError] whose Reason is one of
// [ErrPayloadType], [ErrNoSignature], [ErrRevokedKey], [ErrBadSignature],
// [ErrUnknownKey], [ErrThreshold] (or [ErrMalformedEnvelope]), checked in
// that order:
//
//   - A signature by a revoked key — or merely claiming a revoked key id —
//     rejects the whole envelope even when enough other signatures are valid:
//     an envelope that a revoked key signed came out of a signing pipeline
//     that should no longer be trusted.
//   - A signature that names a trusted key but does not verify rejects the
//     whole envelope (it means tampering or a broken signer).
//   - Signatures by keys outside the trust store are ignored (this is what
//     makes key rotation by dual-signing work), but an envelope signed only
//     by such keys fails with [ErrUnknownKey].
//   - At least Threshold distinct trusted keys must have valid signatures;
//     several signatures by one key count once.
//
// Key ids are compared in constant time.
//
// # Not provided
//
// There is no export to a Sigstore bundle (v0.3). A bundle carries one
// verification key hint while cfs envelopes carry several signatures, and
// cosign's offline checking of DSSE content in a bundle is geared to in-toto
// statements (verify-blob-attestation) rather than an arbitrary payload
// type; without cosign available offline the export could not have been
// tested. Everything in this package is offline: no Rekor, Fulcio or TUF.
package sign
