package composefs

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cfs-dev/cfs/composefs/fsverity"
	"github.com/cfs-dev/cfs/composefs/objstore"
)

// TarOptions configures BuildFromTar. The fields mean what they mean in
// BuildOptions; the zero value builds like plain `mkcomposefs DIR IMG` on
// the extracted archive.
type TarOptions struct {
	// UseEpoch sets every mtime to 0.0 (mkcomposefs --use-epoch).
	UseEpoch bool
	// SkipXattrs records no extended attributes (--skip-xattrs).
	SkipXattrs bool
	// UserXattrs records only "user." attributes (--user-xattrs). It
	// conflicts with SkipXattrs.
	UserXattrs bool
	// SkipDevices leaves out character and block devices, overlay
	// whiteouts (char 0/0) included (--skip-devices).
	SkipDevices bool
	// Store, if set, receives the content of every regular file larger
	// than 64 bytes as it is read from the archive. Without a Store the
	// content is only hashed.
	Store *objstore.Store
	// Logger receives debug records, and a warning for every extended
	// attribute that extraction could not create and that is therefore
	// left out; nil discards them.
	Logger *slog.Logger
	// Progress, if set, is called from a single goroutine about ten
	// times a second while the archive is read, and once at the end.
	// TotalFiles and TotalBytes count the regular files met so far;
	// WalkDone is set once the end of the archive is reached.
	Progress func(BuildProgress)
}

// TarError reports a problem with one member of a tar archive: a
// refused path or link (errors.Is(err, ErrInvalid), with an
// *InvalidError inside), a malformed header (also ErrInvalid), a
// truncated archive (errors.Is(err, io.ErrUnexpectedEOF)), or a failure
// to store or hash the member's content.
type TarError struct {
	// Index is the 1-based position of the member in the archive
	// (PAX and GNU meta headers are not counted).
	Index int
	// Name is the member's name as recorded in the archive; it is empty
	// when the header itself could not be read.
	Name string
	Err  error
}

func (e *TarError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("tar member #%d: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("tar member %q (#%d): %v", e.Name, e.Index, e.Err)
}

// Unwrap returns the underlying error.
func (e *TarError) Unwrap() error { return e.Err }

// BuildFromTar reads a tar archive (ustar, PAX or GNU; GNU sparse members
// included) from r, once and sequentially, and returns the composefs tree
// that BuildFromDir gives for the directory `tar --xattrs
// --xattrs-include='*' --acls --numeric-owner -xpf` creates from it as
// root, with the same options, hence the same image bytes. Regular files
// of 1..64 bytes become inline Content; larger ones are streamed into
// opts.Store (or only hashed, without a store) and get their fs-verity
// Digest and Payload. Memory grows with the number of entries, never with
// file sizes.
//
// Archive semantics:
//   - Member names are normalised: leading "/" and "./", empty and "."
//     components and trailing slashes are dropped. The "./" member sets
//     the root directory's metadata.
//   - Refused, as an error naming the member (*TarError wrapping an
//     *InvalidError, errors.Is(err, ErrInvalid)): names or link names
//     with a ".." component or a NUL byte, components longer than 255
//     bytes, members whose parent path is a symlink or a non-directory in
//     the tree so far (extraction would follow the link out of the tree
//     or fail), hardlinks to the root, to directories, to paths that are
//     not (yet) in the tree or that go through a symlink, uid/gid/device
//     numbers that Linux cannot store, and PAX global headers that carry
//     anything but a comment. Absolute symlink targets are kept as they
//     are: only traversal through a symlink is refused, even to a symlink
//     that points inside the tree (which GNU tar would follow).
//   - Parent directories that have no member of their own are created
//     with mode 0755, uid 0, gid 0, mtime 0 and no xattrs (tar -x would use
//     the umask and the current time; a build must be reproducible). A
//     later member for that directory sets its metadata.
//   - A member whose path already exists replaces the earlier entry,
//     except that a non-directory over a directory that is not empty is
//     refused (tar -x fails there), and a directory member over an
//     existing directory is merged as GNU tar does: the children stay,
//     mode, owner and mtime are the new member's, and its xattrs are
//     added to the existing ones (same name: new value), except the
//     POSIX ACLs, which are the new member's only.
//   - Hardlink members do not stay hardlinks (BuildFromDir does not
//     detect them either): the new name gets a copy of the target's node
//     as it is at that point, metadata, xattrs and content alike; the
//     link member's own metadata is ignored, as tar -x ignores it.
//   - Metadata: all 12 mode bits (symlinks are always 0777), numeric uid
//     and gid (names are ignored), mtime with nanoseconds from PAX, and
//     devmajor/devminor as rdev.
//   - Extended attributes come from the PAX records SCHILY.xattr.<name>
//     (GNU tar's escapes %3D and %25 in names are decoded; binary values
//     are kept), then filtered like BuildFromDir (SkipXattrs,
//     UserXattrs). Attributes that extraction cannot create on Linux are
//     left out with a warning: namespaces other than user., trusted.,
//     security. and the POSIX ACLs, user.* on anything but regular files
//     and directories, ACLs on symlinks and default ACLs on anything but
//     directories. POSIX ACLs behave as when the kernel sets them: an
//     access ACL sets the group (mask) bits of the mode and is not kept
//     when the mode alone expresses it; the value is stored in the
//     kernel's canonical form; a malformed ACL is an error. When a member
//     has a textual GNU tar ACL (SCHILY.acl.access or .default) but no
//     binary system.posix_acl_* record, the text is converted to the
//     binary form; qualifiers must be numeric ids (a user or group name
//     would need this host's user database, which would make the build
//     irreproducible, so it is an error). The binary record wins over
//     the text, and is kept without it; GNU tar --acls would apply the
//     text instead, and drop a binary ACL that has no text twin (as the
//     archives GNU tar writes carry both, the results agree for them).
//     LIBARCHIVE.xattr.* records are not read (libarchive writes
//     SCHILY.xattr.* beside them).
//   - An archive that ends without its end-of-archive marker (zero
//     blocks), or in the middle of a member, is an error wrapping
//     io.ErrUnexpectedEOF; nothing partial is left in the store. Bytes
//     after the marker are not read.
//   - OCI whiteout files (.wh.*) are ordinary files here; overlay
//     whiteouts are character devices 0:0, as in a directory.
func BuildFromTar(ctx context.Context, r io.Reader, opts TarOptions) (*Node, error) {
	bo := BuildOptions{SkipXattrs: opts.SkipXattrs, UserXattrs: opts.UserXattrs}
	if err := bo.validate(); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("%w: nil tar reader", ErrBuildOptions)
	}
	b := newTarBuilder(ctx, opts)
	stop := b.startProgress()
	root, err := b.run(r)
	stop()
	return root, err
}

// Directories created for members whose parents have no member of their
// own (see BuildFromTar).
const implicitDirMode = TypeDir | 0o755

// tarBuilder holds the state of one BuildFromTar.
type tarBuilder struct {
	ctx  context.Context
	opts TarOptions
	log  *slog.Logger
	root *Node
	// kids indexes the children of every directory by name while the
	// archive is read; Node.Children is filled (sorted) at the end.
	kids   map[*Node]map[string]*Node
	hasher *fsverity.Hasher // for hashing without a store

	files, bytes, entries  atomic.Int64
	totalFiles, totalBytes atomic.Int64
	done                   atomic.Bool
}

func newTarBuilder(ctx context.Context, opts TarOptions) *tarBuilder {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &tarBuilder{
		ctx:  ctx,
		opts: opts,
		log:  log,
		root: NewNode("", implicitDirMode),
		kids: make(map[*Node]map[string]*Node),
	}
}

// startProgress starts the progress reporter, if any, and returns the
// function that stops it after a final report.
func (b *tarBuilder) startProgress() func() {
	if b.opts.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				b.opts.Progress(b.snapshot())
				return
			case <-t.C:
				b.opts.Progress(b.snapshot())
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

func (b *tarBuilder) snapshot() BuildProgress {
	return BuildProgress{
		Files:      b.files.Load(),
		Bytes:      b.bytes.Load(),
		Entries:    b.entries.Load(),
		TotalFiles: b.totalFiles.Load(),
		TotalBytes: b.totalBytes.Load(),
		WalkDone:   b.done.Load(),
	}
}

func (b *tarBuilder) run(r io.Reader) (*Node, error) {
	start := time.Now()
	src := &tailReader{r: r}
	tr := tar.NewReader(src)
	prev := ""
	for idx := 1; ; idx++ {
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if err := src.checkEnd(prev); err != nil {
				return nil, err
			}
			break
		}
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			err = nil // GODEBUG=tarinsecurepath=0; our own checks are stricter
		}
		if err != nil {
			return nil, &TarError{Index: idx, Err: headerError(src, prev, err)}
		}
		if err := b.member(tr, hdr); err != nil {
			return nil, &TarError{Index: idx, Name: hdr.Name, Err: err}
		}
		prev = hdr.Name
	}
	b.finish()
	b.done.Store(true)
	b.log.Debug("composefs: built tree from tar",
		"entries", b.entries.Load(), "files", b.files.Load(), "bytes", b.bytes.Load(),
		"store", b.opts.Store != nil, "duration", time.Since(start))
	return b.root, nil
}

// headerError classifies an error from tar.Reader.Next: truncation and
// read errors of the source stay I/O errors, anything else is a
// malformed archive (ErrInvalid).
func headerError(src *tailReader, prev string, err error) error {
	after := "at the start of the archive"
	if prev != "" {
		after = fmt.Sprintf("after member %q", prev)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || (src.err != nil && errors.Is(err, src.err)) {
		return fmt.Errorf("read header %s: %w", after, err)
	}
	return fmt.Errorf("%w: malformed header %s: %w", ErrInvalid, after, err)
}

// member adds one archive member to the tree.
func (b *tarBuilder) member(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		for k := range hdr.PAXRecords {
			if k != "comment" {
				return invalid(hdr.Name, "PAX global header record %q is not supported (it would change the members that follow)", k)
			}
		}
		return nil
	case 'V': // GNU volume label: not a file
		return nil
	}
	b.entries.Add(1)
	parts, err := splitMemberPath(hdr.Name)
	if err != nil {
		return invalid(hdr.Name, "%v", err)
	}
	path := "/" + strings.Join(parts, "/")

	var typ uint32
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		typ = TypeRegular
	case tar.TypeDir, 'D': // 'D': GNU incremental dump directory
		typ = TypeDir
	case tar.TypeSymlink:
		typ = TypeSymlink
	case tar.TypeChar:
		typ = TypeChar
	case tar.TypeBlock:
		typ = TypeBlock
	case tar.TypeFifo:
		typ = TypeFifo
	case tar.TypeLink:
		return b.hardlink(hdr, parts, path)
	default:
		return invalid(path, "unsupported member type %q", hdr.Typeflag)
	}

	if len(parts) == 0 && typ != TypeDir {
		return invalid(path, "the archive's root member is not a directory")
	}
	var dir *Node
	if len(parts) > 0 {
		if dir, err = b.parentDir(parts, path); err != nil {
			return err
		}
	}
	n, err := b.nodeFromHeader(hdr, typ, path)
	if err != nil {
		return err
	}
	if typ == TypeRegular {
		if err := b.readContent(tr, n, hdr.Size, path); err != nil {
			return err
		}
	}
	if err := ValidateNode(n); err != nil {
		return withPath(path, err)
	}
	if len(parts) == 0 {
		return withPath(path, mergeDir(b.root, n))
	}
	return withPath(path, b.place(dir, parts[len(parts)-1], n))
}

// splitMemberPath normalises a member or link name to its components
// (none for the root), refusing what could escape the tree or cannot be a
// Linux file name.
func splitMemberPath(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, errors.New("name contains a NUL byte")
	}
	var parts []string
	for c := range strings.SplitSeq(name, "/") {
		switch {
		case c == "" || c == ".":
		case c == "..":
			return nil, errors.New(`name has a ".." component`)
		case len(c) > MaxNameLen:
			return nil, fmt.Errorf("name component of %d bytes is longer than %d", len(c), MaxNameLen)
		default:
			parts = append(parts, c)
		}
	}
	return parts, nil
}

func (b *tarBuilder) child(dir *Node, name string) *Node {
	return b.kids[dir][name]
}

// place makes n the entry name of dir. A directory over a directory
// is merged into it (mergeDir); anything else replaces the old entry.
func (b *tarBuilder) place(dir *Node, name string, n *Node) error {
	m := b.kids[dir]
	if m == nil {
		m = make(map[string]*Node)
		b.kids[dir] = m
	}
	old := m[name]
	if old != nil && old.IsDir() {
		if n.IsDir() {
			return mergeDir(old, n)
		}
		if len(b.kids[old]) > 0 {
			return invalid("", "it would replace a directory that is not empty (tar -x fails there)")
		}
		delete(b.kids, old)
	}
	n.Name = name
	m[name] = n
	return nil
}

// mergeDir applies a directory member to an existing directory as GNU
// tar does: mode, owner and mtime are the new member's; xattrs are set
// on top of the existing ones (a name in both takes the new value), but
// the POSIX ACLs are the new member's only (tar --acls applies the last
// member's ACLs, the mode's minimal ACL when it has none).
func mergeDir(dst, src *Node) error {
	old := dst.Xattrs
	dst.Mode, dst.UID, dst.GID, dst.Mtime, dst.Xattrs = src.Mode, src.UID, src.GID, src.Mtime, nil
	for _, x := range old {
		if _, ok := src.GetXattr(x.Name); !ok && x.Name != xattrACLAccess && x.Name != xattrACLDeflt {
			dst.Xattrs = append(dst.Xattrs, x)
		}
	}
	for _, x := range src.Xattrs {
		if err := dst.SetXattr(x.Name, x.Value); err != nil {
			return err
		}
	}
	slices.SortFunc(dst.Xattrs, func(x, y Xattr) int { return cmp.Compare(x.Name, y.Name) })
	return nil
}

// parentDir returns the directory that will hold the member parts,
// creating missing ancestors. Going through a symlink or a non-directory
// is refused.
func (b *tarBuilder) parentDir(parts []string, path string) (*Node, error) {
	dir := b.root
	for i, name := range parts[:len(parts)-1] {
		c := b.child(dir, name)
		switch {
		case c == nil:
			c = NewNode(name, implicitDirMode)
			if err := b.place(dir, name, c); err != nil {
				return nil, err
			}
		case c.IsSymlink():
			return nil, invalid(path, "parent /%s is a symlink (to %q): extraction would follow it", strings.Join(parts[:i+1], "/"), c.Payload)
		case !c.IsDir():
			return nil, invalid(path, "parent /%s is not a directory (mode %o)", strings.Join(parts[:i+1], "/"), c.Mode)
		}
		dir = c
	}
	return dir, nil
}

// hardlink adds a hardlink member as a copy of its target's node.
func (b *tarBuilder) hardlink(hdr *tar.Header, parts []string, path string) error {
	if len(parts) == 0 {
		return invalid(path, "a hardlink cannot be the archive's root")
	}
	tparts, err := splitMemberPath(hdr.Linkname)
	if err != nil {
		return invalid(path, "hardlink target %q: %v", hdr.Linkname, err)
	}
	if len(tparts) == 0 {
		return invalid(path, "hardlink to the root directory")
	}
	target := b.root
	for i, name := range tparts {
		c := b.child(target, name)
		tp := "/" + strings.Join(tparts[:i+1], "/")
		switch {
		case c == nil:
			return invalid(path, "hardlink target %s does not exist (yet)", tp)
		case i < len(tparts)-1 && c.IsSymlink():
			return invalid(path, "hardlink target %q goes through symlink %s", hdr.Linkname, tp)
		case i < len(tparts)-1 && !c.IsDir():
			return invalid(path, "hardlink target %q: %s is not a directory", hdr.Linkname, tp)
		}
		target = c
	}
	if target.IsDir() {
		return invalid(path, "hardlink to directory %s", "/"+strings.Join(tparts, "/"))
	}
	if slices.Equal(parts, tparts) {
		return nil // a link to itself: the file is already there
	}
	dir, err := b.parentDir(parts, path)
	if err != nil {
		return err
	}
	return withPath(path, b.place(dir, parts[len(parts)-1], cloneLinked(target)))
}

// cloneLinked returns an independent copy of a non-directory node, as a
// second name of the same inode looks to BuildFromDir.
func cloneLinked(t *Node) *Node {
	c := &Node{
		Mode: t.Mode, Nlink: 1, UID: t.UID, GID: t.GID, Rdev: t.Rdev, Size: t.Size,
		Mtime: t.Mtime, Payload: t.Payload, Xattrs: slices.Clone(t.Xattrs),
	}
	if t.Content != nil {
		c.Content = bytes.Clone(t.Content)
	}
	if t.Digest != nil {
		d := *t.Digest
		c.Digest = &d
	}
	return c
}

// Linux limits that extraction runs into.
const (
	linuxMaxID    = 1<<32 - 2 // (uid_t)-1 means "unchanged" to chown
	linuxMaxMajor = 1<<12 - 1 // the kernel's dev_t: 12-bit major,
	linuxMaxMinor = 1<<20 - 1 // 20-bit minor
)

// nodeFromHeader makes the node of a non-hardlink member: type, mode,
// owner, mtime, rdev, symlink target and xattrs.
func (b *tarBuilder) nodeFromHeader(hdr *tar.Header, typ uint32, path string) (*Node, error) {
	if hdr.Uid < 0 || int64(hdr.Uid) > linuxMaxID || hdr.Gid < 0 || int64(hdr.Gid) > linuxMaxID {
		return nil, invalid(path, "uid %d / gid %d out of range", hdr.Uid, hdr.Gid)
	}
	n := &Node{Mode: typ | uint32(hdr.Mode)&ModePermMask, Nlink: 1, UID: uint32(hdr.Uid), GID: uint32(hdr.Gid)}
	if !b.opts.UseEpoch {
		n.Mtime = Timespec{Sec: hdr.ModTime.Unix(), Nsec: uint32(hdr.ModTime.Nanosecond())}
	}
	switch typ {
	case TypeSymlink:
		n.Mode = TypeSymlink | 0o777
		switch {
		case hdr.Linkname == "":
			return nil, invalid(path, "symlink without a target")
		case len(hdr.Linkname) > MaxSymlinkLen:
			return nil, invalid(path, "symlink target of %d bytes is longer than %d", len(hdr.Linkname), MaxSymlinkLen)
		case strings.IndexByte(hdr.Linkname, 0) >= 0:
			return nil, invalid(path, "symlink target contains a NUL byte")
		}
		n.Payload = hdr.Linkname
		n.Size = uint64(len(hdr.Linkname))
	case TypeChar, TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devmajor > linuxMaxMajor || hdr.Devminor < 0 || hdr.Devminor > linuxMaxMinor {
			return nil, invalid(path, "device number %d:%d does not fit Linux's dev_t", hdr.Devmajor, hdr.Devminor)
		}
		n.Rdev = linuxMkdev(uint64(hdr.Devmajor), uint64(hdr.Devminor))
	}
	if err := b.xattrs(hdr, n, path); err != nil {
		return nil, err
	}
	return n, nil
}

// linuxMkdev encodes a device number as Linux's st_rdev (glibc makedev).
func linuxMkdev(major, minor uint64) uint64 {
	return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
}

// readContent reads a regular file's content: inline if 1..64 bytes,
// else streamed into the store (or the hasher) for its digest.
func (b *tarBuilder) readContent(tr io.Reader, n *Node, size int64, path string) error {
	if uint64(size) > MaxFileSize {
		return invalid(path, "file size %d is larger than %d", size, uint64(MaxFileSize))
	}
	n.Size = uint64(size)
	b.totalFiles.Add(1)
	b.totalBytes.Add(size)
	er := &entryReader{r: tr, ctx: b.ctx, bytes: &b.bytes}
	switch {
	case size == 0:
	case inlineContent(size):
		buf := make([]byte, size)
		if _, err := io.ReadFull(er, buf); err != nil {
			return er.cause(err)
		}
		n.Content = buf
	default:
		var d fsverity.Digest
		var got int64
		var err error
		if s := b.opts.Store; s != nil {
			d, got, err = s.Insert(b.ctx, er)
		} else {
			if b.hasher == nil {
				b.hasher = fsverity.NewHasher(fsverity.SHA256)
			}
			b.hasher.Reset()
			got, err = b.hasher.ReadFrom(er)
			d = b.hasher.Digest()
		}
		if err != nil {
			return er.cause(err)
		}
		if got != size {
			return fmt.Errorf("read content: %d bytes, the header says %d: %w", got, size, io.ErrUnexpectedEOF)
		}
		n.Digest = &d
		n.Payload = d.ObjectPath()
	}
	b.files.Add(1)
	return nil
}

// errEntryAborted is what entryReader hands to its consumer instead of the
// tar reader's error: the object store treats io.ErrUnexpectedEOF as a
// clean end of input, and a truncated member must never be stored.
var errEntryAborted = errors.New("reading the tar member failed")

// entryReader reads one member's content, counting bytes for progress and
// stopping on cancellation. Errors other than io.EOF are kept in err and
// replaced by errEntryAborted.
type entryReader struct {
	r     io.Reader
	ctx   context.Context
	bytes *atomic.Int64
	err   error
}

func (e *entryReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, errEntryAborted
	}
	if err := e.ctx.Err(); err != nil {
		e.err = err
		return 0, errEntryAborted
	}
	n, err := e.r.Read(p)
	e.bytes.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
		return n, errEntryAborted
	}
	return n, err
}

// cause returns the error to report for a failed read of the member.
func (e *entryReader) cause(err error) error {
	if e.err != nil {
		if errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded) {
			return e.err
		}
		return fmt.Errorf("read content: %w", e.err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read content: %w", err)
	}
	return fmt.Errorf("store content: %w", err)
}

// tailReader remembers the last 512 bytes read, to tell an archive that
// ends with its end-of-archive marker (zero blocks) from one that was cut
// at a member boundary.
type tailReader struct {
	r     io.Reader
	total int64
	tail  [512]byte
	err   error // the first read error other than io.EOF
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n >= len(t.tail) {
		copy(t.tail[:], p[n-len(t.tail):n])
	} else if n > 0 {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], p[:n])
	}
	t.total += int64(n)
	if err != nil && t.err == nil && !errors.Is(err, io.EOF) {
		t.err = err
	}
	return n, err
}

// checkEnd is called when the tar reader reports the end of the archive.
func (t *tailReader) checkEnd(last string) error {
	if t.total == 0 {
		return fmt.Errorf("tar: empty input: %w", io.ErrUnexpectedEOF)
	}
	if t.total < int64(len(t.tail)) || t.tail != [512]byte{} {
		return fmt.Errorf("tar: archive ends after member %q without its end-of-archive marker (truncated?): %w", last, io.ErrUnexpectedEOF)
	}
	return nil
}

// finish fills every directory's Children from the index, sorted, and
// leaves out devices if asked to.
func (b *tarBuilder) finish() {
	stack := []*Node{b.root}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		m := b.kids[d]
		d.Children = nil
		for _, c := range m {
			if t := c.Type(); b.opts.SkipDevices && (t == TypeChar || t == TypeBlock) {
				continue
			}
			d.Children = append(d.Children, c)
			if c.IsDir() {
				stack = append(stack, c)
			}
		}
		slices.SortFunc(d.Children, func(x, y *Node) int { return strings.Compare(x.Name, y.Name) })
		for _, c := range d.Children {
			c.parent = d
		}
	}
	b.kids = nil
}

// withPath gives an *InvalidError from a Node method the member's path.
func withPath(path string, err error) error {
	if err == nil {
		return nil
	}
	var ie *InvalidError
	if errors.As(err, &ie) {
		return &InvalidError{Path: path, Reason: ie.Reason}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// PAX record names used for extended attributes and ACLs.
const (
	paxXattrPrefix = "SCHILY.xattr."
	paxACLAccess   = "SCHILY.acl.access"
	paxACLDefault  = "SCHILY.acl.default"
	xattrACLAccess = "system.posix_acl_access"
	xattrACLDeflt  = "system.posix_acl_default"
)

// xattrKeyword decodes GNU tar's escapes in SCHILY.xattr names ("=" cannot
// appear in a PAX keyword).
var xattrKeyword = strings.NewReplacer("%3D", "=", "%25", "%")

// xattrs sets n's extended attributes from the member's PAX records, as
// extraction creates them (see BuildFromTar), filtered by the options. An
// access ACL also sets the group bits of n's mode, whatever the options.
func (b *tarBuilder) xattrs(hdr *tar.Header, n *Node, path string) error {
	var list []Xattr
	for k, v := range hdr.PAXRecords {
		if raw, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			list = append(list, Xattr{Name: xattrKeyword.Replace(raw), Value: v})
		}
	}
	slices.SortFunc(list, func(x, y Xattr) int { return cmp.Compare(x.Name, y.Name) })
	for i := 1; i < len(list); i++ {
		if list[i].Name == list[i-1].Name {
			return invalid(path, "xattr %q is recorded twice (differently escaped)", list[i].Name)
		}
	}
	for _, a := range [...]struct{ pax, name string }{{paxACLAccess, xattrACLAccess}, {paxACLDefault, xattrACLDeflt}} {
		text := hdr.PAXRecords[a.pax]
		if strings.TrimSpace(text) == "" || slices.ContainsFunc(list, func(x Xattr) bool { return x.Name == a.name }) {
			continue
		}
		acl, err := parseACLText(text)
		if err != nil {
			return invalid(path, "%s: %v", a.pax, err)
		}
		list = append(list, Xattr{Name: a.name, Value: acl.encode()})
	}
	slices.SortFunc(list, func(x, y Xattr) int { return cmp.Compare(x.Name, y.Name) })

	typ := n.Type()
	for _, x := range list {
		keep, err := b.extracted(&x, n, typ, path)
		if err != nil {
			return err
		}
		if !keep || b.opts.SkipXattrs || (b.opts.UserXattrs && !strings.HasPrefix(x.Name, "user.")) {
			continue
		}
		if err := n.SetXattr(x.Name, x.Value); err != nil {
			return withPath(path, err)
		}
	}
	return nil
}

// extracted applies what setting xattr x on a new file of type typ does
// on Linux: it reports whether the attribute exists afterwards, with its
// stored value in x, and applies an access ACL to n's mode.
func (b *tarBuilder) extracted(x *Xattr, n *Node, typ uint32, path string) (bool, error) {
	skip := func(why string) (bool, error) {
		b.log.Warn("composefs: tar member xattr left out: extraction cannot create it",
			"path", path, "xattr", x.Name, "reason", why)
		return false, nil
	}
	switch x.Name {
	case xattrACLAccess, xattrACLDeflt:
		if typ == TypeSymlink {
			return skip("symlinks have no ACLs")
		}
		if x.Name == xattrACLDeflt && typ != TypeDir {
			return skip("only directories have a default ACL")
		}
		acl, err := parseACLXattr(x.Value)
		if err != nil {
			return false, invalid(path, "xattr %s: %v", x.Name, err)
		}
		if len(acl) == 0 {
			return false, nil // an empty ACL removes the ACL
		}
		if x.Name == xattrACLAccess {
			perm, equiv := acl.mode()
			n.Mode = n.Mode&^0o777 | perm
			if equiv {
				return false, nil // the mode says it all: not stored
			}
		}
		x.Value = acl.encode()
		return true, nil
	}
	ns, rest, _ := strings.Cut(x.Name, ".")
	switch {
	case ns != "user" && ns != "trusted" && ns != "security":
		return skip("namespace not supported by Linux")
	case rest == "":
		return skip("empty name after the namespace")
	case ns == "user" && typ != TypeRegular && typ != TypeDir:
		return skip("user.* xattrs exist only on regular files and directories")
	}
	return true, nil
}

// POSIX ACLs in the kernel's xattr form (include/uapi/linux/posix_acl_xattr.h):
// a little-endian u32 version 2, then entries of u16 tag, u16 perm, u32 id.
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

type posixACLEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

type posixACL []posixACLEntry

// parseACLXattr decodes and validates a binary ACL.
func parseACLXattr(v string) (posixACL, error) {
	if len(v) < 4 || (len(v)-4)%8 != 0 {
		return nil, fmt.Errorf("%d bytes is not a 4-byte header plus 8-byte entries", len(v))
	}
	if ver := binary.LittleEndian.Uint32([]byte(v[:4])); ver != aclVersion {
		return nil, fmt.Errorf("version %d, want %d", ver, aclVersion)
	}
	a := make(posixACL, 0, (len(v)-4)/8)
	for p := []byte(v[4:]); len(p) > 0; p = p[8:] {
		a = append(a, posixACLEntry{
			tag:  binary.LittleEndian.Uint16(p),
			perm: binary.LittleEndian.Uint16(p[2:]),
			id:   binary.LittleEndian.Uint32(p[4:]),
		})
	}
	if len(a) == 0 {
		return a, nil
	}
	return a, a.validate()
}

// validate checks an ACL as the kernel's posix_acl_valid does: entries in
// tag order, named entries by increasing id, one owner, owning group and
// other entry, and a mask when there are named entries.
func (a posixACL) validate() error {
	const done = 0
	state := aclUserObj
	needMask := false
	havePrev := false
	var prev uint32
	for _, e := range a {
		if e.perm&^7 != 0 {
			return fmt.Errorf("entry with permission bits %#o", e.perm)
		}
		switch e.tag {
		case aclUserObj:
			if state != aclUserObj {
				return errors.New("misplaced or repeated owner entry")
			}
			state = aclUser
		case aclUser, aclGroup:
			if (e.tag == aclUser && state != aclUser) || (e.tag == aclGroup && state != aclGroup) {
				return fmt.Errorf("misplaced named entry (tag %#x)", e.tag)
			}
			if e.id == aclNoID {
				return errors.New("named entry without an id")
			}
			if havePrev && e.id <= prev {
				return errors.New("named entries not sorted by id or repeated")
			}
			prev, havePrev, needMask = e.id, true, true
		case aclGroupObj:
			if state != aclUser {
				return errors.New("misplaced or repeated owning group entry")
			}
			state, havePrev = aclGroup, false
		case aclMask:
			if state != aclGroup {
				return errors.New("misplaced or repeated mask entry")
			}
			state = aclOther
		case aclOther:
			if state != aclOther && (state != aclGroup || needMask) {
				return errors.New("misplaced other entry, or named entries without a mask")
			}
			state = done
		default:
			return fmt.Errorf("unknown tag %#x", e.tag)
		}
	}
	if state != done {
		return errors.New("incomplete ACL")
	}
	return nil
}

// mode returns the permission bits an access ACL gives the file, and
// whether the mode alone expresses the ACL (no named entries, no mask),
// as posix_acl_equiv_mode.
func (a posixACL) mode() (perm uint32, equiv bool) {
	equiv = true
	for _, e := range a {
		p := uint32(e.perm & 7)
		switch e.tag {
		case aclUserObj:
			perm |= p << 6
		case aclGroupObj:
			perm |= p << 3
		case aclOther:
			perm |= p
		case aclMask:
			perm = perm&^0o070 | p<<3
			equiv = false
		default:
			equiv = false
		}
	}
	return perm, equiv
}

// encode returns the ACL in the form the kernel stores and returns:
// version 2, ids only on named entries.
func (a posixACL) encode() string {
	out := make([]byte, 4, 4+8*len(a))
	binary.LittleEndian.PutUint32(out, aclVersion)
	for _, e := range a {
		id := e.id
		if e.tag != aclUser && e.tag != aclGroup {
			id = aclNoID
		}
		out = binary.LittleEndian.AppendUint16(out, e.tag)
		out = binary.LittleEndian.AppendUint16(out, e.perm)
		out = binary.LittleEndian.AppendUint32(out, id)
	}
	return string(out)
}

// parseACLText converts a textual ACL as GNU tar records it (acl_to_text:
// "user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r--", entries
// separated by commas or newlines, "#" comments) into a validated ACL
// sorted as the kernel wants it. Qualifiers must be numeric.
func parseACLText(text string) (posixACL, error) {
	var a posixACL
	for e := range strings.FieldsFuncSeq(text, func(r rune) bool { return r == ',' || r == '\n' }) {
		if i := strings.IndexByte(e, '#'); i >= 0 {
			e = e[:i]
		}
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		f := strings.Split(e, ":")
		var tag uint16
		switch f[0] {
		case "user", "u":
			tag = aclUserObj
		case "group", "g":
			tag = aclGroupObj
		case "mask", "m":
			tag = aclMask
		case "other", "o":
			tag = aclOther
		default:
			return nil, fmt.Errorf("entry %q: unknown tag", e)
		}
		if len(f) == 2 && (tag == aclMask || tag == aclOther) {
			f = []string{f[0], "", f[1]}
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("entry %q: want tag:qualifier:permissions", e)
		}
		id := uint32(aclNoID)
		if f[1] != "" {
			if tag != aclUserObj && tag != aclGroupObj {
				return nil, fmt.Errorf("entry %q: %s entries take no qualifier", e, f[0])
			}
			v, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil || v == aclNoID {
				return nil, fmt.Errorf("entry %q names a user or group: only numeric ids can be converted reproducibly (archive the binary %s xattrs, or use --numeric-owner)", e, "system.posix_acl_*")
			}
			id = uint32(v)
			tag <<= 1 // aclUserObj → aclUser, aclGroupObj → aclGroup
		}
		perm, err := parseACLPerm(f[2])
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v", e, err)
		}
		a = append(a, posixACLEntry{tag: tag, perm: perm, id: id})
	}
	slices.SortStableFunc(a, func(x, y posixACLEntry) int {
		if c := cmp.Compare(x.tag, y.tag); c != 0 {
			return c
		}
		return cmp.Compare(x.id, y.id)
	})
	if len(a) == 0 {
		return nil, errors.New("empty ACL")
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	return a, nil
}

func parseACLPerm(s string) (uint16, error) {
	var p uint16
	for _, c := range s {
		switch c {
		case 'r':
			p |= 4
		case 'w':
			p |= 2
		case 'x':
			p |= 1
		case '-':
		default:
			return 0, fmt.Errorf("bad permission character %q", c)
		}
	}
	if s == "" {
		return 0, errors.New("no permissions")
	}
	return p, nil
}
