// Package deploy turns signed cfs commits into bootable deployments on a
// sysroot, modelled on ostree's deployments: a repository inside the
// sysroot, one directory per deployment (its regenerated composefs image,
// its writable /etc, an origin file, a copy of the signed commit), a
// shared /var per stateroot, kernels and initramfs images on the boot
// partition in content-named directories, and one Boot Loader
// Specification Type #1 entry per deployment.
//
// The operations (Switch, Upgrade, Finalize, Rollback, Pin, Cleanup) take
// one exclusive lock (cfs/lock), remove what an interrupted operation left
// behind, and change what boots at exactly one point: the
// renameat2(RENAME_EXCHANGE) of loader/entries.new with loader/entries.
// Everything before it is verified (the commit's signature against the
// sysroot's trust store, the regenerated image's digest, every object,
// the boot files) and staged so that a failure or a crash leaves the
// previous default in place; see docs/deployments.md for the layout, the
// steps, the trust argument for skipping objects the merge deployment
// already uses, and the JSON schema of Status.
//
// The package is Linux-only (renameat2, syncfs, lchown, mknod, xattrs).
package deploy
