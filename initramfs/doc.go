// Package initramfs is what runs early in boot, before anything from the
// root file system: it proves that the deployment named on the kernel
// command line is a signed commit whose image is the one the boot entry,
// the signature and the TPM agree on, and mounts its composefs root at
// /sysroot with the deployment's writable /etc and the stateroot's /var.
//
// MountRoot runs the checks in a fixed order and mounts nothing until all of
// them passed that can be made before mounting; every refusal is a
// *CheckError naming the check, the expected and actual values and the
// deployment, and leaves nothing mounted:
//
//  1. kernel command line: composefs=<sha256 hex> and cfs.deployment=<path>
//     present and well formed; the effective policy is the configuration
//     made stricter (never weaker) by cfs.tpm= and cfs.verity=;
//  2. the deployment path resolves beneath the physical root without
//     symbolic links or mount crossings;
//  3. signature: the deployment's copy of the commit hashes to the commit id
//     in its name and carries enough valid signatures by keys built into the
//     initramfs, none of them revoked;
//  4. command line digest: composefs= equals the signed image digest (and
//     cfs.commit=, when given, the commit id);
//  5. TPM, per the mode: the deployment's sealed blob unseals to exactly the
//     signed digest, commit and rollback index, under the enrolled PCR
//     policy, and the rollback index is not below the TPM counter;
//  6. image digest: the fs-verity digest of image.cfs (measured by the kernel
//     where the file has fs-verity, else computed) equals the signed digest;
//  7. objects: with verity = require the kernel enforces fs-verity on every
//     object (overlayfs verity=require); with verity = objects every
//     referenced object is hashed in user space before the mount;
//  8. mount, bind /etc and /var, record <run>/cfs/booted.json, and extend
//     the measure PCR with the root's identity (the latch).
package initramfs
