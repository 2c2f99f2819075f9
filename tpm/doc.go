// Package tpm binds a cfs deployment to a TPM 2.0: it seals the expected
// composefs image digest, commit id and rollback index of each deployment,
// unseals them defensively at boot, keeps an anti-rollback NV counter, and
// measures the booted root into a PCR (the "latch") with a systemd-style
// event log record.
//
// The TPM is never the authority for content: the signed commit metadata
// is. What the TPM adds is (1) an anti-rollback counter no disk edit can
// lower, (2) binding of a deployment to the machine's boot chain through a
// PCR policy signed by a local policy key (PolicyAuthorize, as systemd's
// signed policies), and (3) a measurement for attestation that also closes
// the sealed object after use (PCR 15 latch). Unseal therefore treats every
// blob as hostile input and ends with a constant-time comparison against
// the digest the caller took from verified signed metadata.
//
// Layout of the objects (all SHA-256):
//
//   - SRK: the TCG "ECC P-256 SRK" template under the owner hierarchy (the
//     same key systemd and tpm2-tools call the SRK), persisted at
//     0x81000001 at enrollment when that handle is free, or recreated with
//     TPM2_CreatePrimary (deterministic from the owner seed) when it is
//     taken by something else. Its name is enrolled; another name means
//     another TPM (or a cleared one) and every operation refuses.
//   - Sealed object: KEYEDHASH under the SRK, fixedTPM|fixedParent|
//     adminWithPolicy|noDA and no userWithAuth, authPolicy =
//     PolicyAuthorize(policy key name, "cfs-root").
//   - Policy key: a software ECC P-256 key (private PEM on the sysroot,
//     separate from the commit-signing keys); it signs
//     SHA-256(PolicyPCR digest || "cfs-root") for the expected PCR values.
//   - Anti-rollback counter: an NV index of type TPM_NT_COUNTER
//     (DefaultNVIndex), read through a session salted to the SRK.
//
// Every function takes the transport (transport.TPM) as its first argument;
// Open makes one from a URI. No function prints, exits or reads globals.
package tpm
