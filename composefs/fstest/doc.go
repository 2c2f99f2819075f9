// Package fstest compares file trees: the source directory of a composefs
// image with the mounted image (kernel overlay or FUSE), path by path —
// type, permission bits, owner, size, mtime (ns), device number, symlink
// target, extended attributes and content. It is the conformance check
// every mount backend is held to.
//
// It is Linux-only (it reads Linux stat fields and xattrs).
package fstest
