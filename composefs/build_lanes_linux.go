package composefs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cfs-dev/cfs/composefs/fsverity"
)

// The lane hasher hashes several files at once, so that the Merkle leaves
// of small files too can go through fsverity.SumLeaves together (most
// files of an OS tree have only a few leaves; one file alone rarely has
// eight to hash at once). Each lane reads its file a chunk at a time into
// its own buffer; every step hashes the next leaf of every busy lane.

// laneChunk is how much of its file a lane reads at a time.
const laneChunk = 8 * fsverity.BlockSize

// hasherKind forces the choice of hasher (tests): "single" (hasher, one
// file at a time) or "lanes" (laneHasher, also where fsverity.FastLeaves
// is false). By default laneHasher is used where the leaves are hashed
// faster together.
var hasherKind = ""

// lane is one file being hashed by laneHasher.
type lane struct {
	t    fileTask
	f    *os.File
	h    *fsverity.Hasher
	buf  []byte // laneChunk bytes; a partial last leaf is zero-padded
	n    int    // bytes of buf holding file data
	pos  int    // offset in buf of the next leaf
	read int64  // bytes of the file read so far
	busy bool
}

// laneHasher does the work of hasher for fsverity.LeafLanes files at a
// time, until the file queue is closed and drained.
func (b *builder) laneHasher() {
	var lanes [fsverity.LeafLanes]lane
	mem := make([]byte, len(lanes)*laneChunk)
	for i := range lanes {
		lanes[i].buf = mem[i*laneChunk : (i+1)*laneChunk : (i+1)*laneChunk]
		lanes[i].h = fsverity.NewHasher(fsverity.SHA256)
	}
	defer func() {
		for i := range lanes {
			if lanes[i].busy {
				lanes[i].f.Close()
			}
		}
	}()
	// Files the lanes do not take are hashed one at a time.
	single := fsverity.NewHasher(fsverity.SHA256)
	singleBuf := make([]byte, hashBufSize)
	var (
		leaves [fsverity.LeafLanes][]byte
		which  [fsverity.LeafLanes]int
		sums   [fsverity.LeafLanes][32]byte
	)
	queueDone := false
	for {
		busy := 0
		for i := range lanes {
			if lanes[i].busy {
				busy++
			}
		}
		// Give idle lanes new files: wait for one only when all are idle.
		for i := range lanes {
			if lanes[i].busy || queueDone {
				continue
			}
			var t fileTask
			var ok bool
			if busy == 0 {
				t, ok = b.fileQ.pop()
				queueDone = !ok
			} else {
				t, ok, queueDone = b.fileQ.tryPop()
			}
			if !ok {
				break
			}
			if err := b.ctx.Err(); err != nil {
				b.fail(err)
				continue
			}
			if t.sparse || b.opts.Cache != nil && b.entryCache == nil {
				// Holes are hashed without reading them; a plain
				// digest cache may spare the read.
				if err := b.hashFile(t, single, singleBuf); err != nil {
					b.fail(err)
				}
				continue
			}
			if err := b.startLane(&lanes[i], t); err != nil {
				b.fail(err)
				continue
			}
			busy++
		}
		if busy == 0 {
			if queueDone {
				return
			}
			continue
		}
		// The next leaf of every busy lane.
		n := 0
		for i := range lanes {
			l := &lanes[i]
			if !l.busy {
				continue
			}
			if err := b.nextLeaf(l); err != nil {
				b.fail(err)
				b.stopLane(l)
				continue
			}
			if l.pos == l.n { // nothing left: the file is empty
				b.endLane(l)
				continue
			}
			leaves[n], which[n] = l.buf[l.pos:l.pos+fsverity.BlockSize], i
			n++
		}
		fsverity.SumLeaves(&sums, &leaves, n)
		for k := range n {
			l := &lanes[which[k]]
			m := min(fsverity.BlockSize, l.n-l.pos)
			l.h.AddLeafHash(&sums[k], m)
			l.pos += m
			b.bytes.Add(int64(m))
			if l.pos == l.n && l.read == l.t.key.size {
				b.endLane(l)
			}
		}
	}
}

// startLane opens t's file in l.
func (b *builder) startLane(l *lane, t fileTask) error {
	f, err := b.openTask(t)
	if err != nil {
		return err
	}
	l.t, l.f, l.busy = t, f, true
	l.n, l.pos, l.read = 0, 0, 0
	l.h.Reset()
	return nil
}

// nextLeaf reads the next chunk of l's file once the leaves in its buffer
// are used up. The last chunk's partial leaf is padded with zeros.
func (b *builder) nextLeaf(l *lane) error {
	if l.pos < l.n || l.read == l.t.key.size {
		return nil
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	want := int(min(int64(laneChunk), l.t.key.size-l.read))
	got := 0
	for got < want {
		m, err := l.f.ReadAt(l.buf[got:want], l.read+int64(got))
		got += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", l.f.Name(), err)
		}
	}
	l.read += int64(got)
	if got < want { // the file shrank
		return shortRead(l.f, l.read, l.t.key.size)
	}
	end := (got + fsverity.BlockSize - 1) &^ (fsverity.BlockSize - 1)
	clear(l.buf[got:end])
	l.n, l.pos = got, 0
	return nil
}

// endLane finishes l's file, whose whole content has been hashed.
func (b *builder) endLane(l *lane) {
	if err := b.finishFile(l.t, l.f, l.h.Digest()); err != nil {
		b.fail(err)
	}
	b.stopLane(l)
}

// stopLane closes l's file and makes l idle.
func (b *builder) stopLane(l *lane) {
	l.f.Close()
	l.f, l.busy = nil, false
	l.t = fileTask{}
}
