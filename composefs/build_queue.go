package composefs

import "sync"

// workQueue is an unbounded queue of tasks shared by a pool of goroutines.
// Producers never block (so the directory walk cannot stall behind the
// hashers); consumers block in pop until a task arrives or the queue is
// closed and drained.
type workQueue[T any] struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []T
	head   int  // next item for FIFO queues
	lifo   bool // pop the newest item (depth-first walk, less pending work)
	closed bool
}

func newWorkQueue[T any](lifo bool) *workQueue[T] {
	q := &workQueue[T]{lifo: lifo}
	q.cond.L = &q.mu
	return q
}

func (q *workQueue[T]) push(t T) {
	q.mu.Lock()
	q.items = append(q.items, t)
	q.mu.Unlock()
	q.cond.Signal()
}

// pop returns the next task, or false once the queue is closed and empty.
func (q *workQueue[T]) pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.items) && !q.closed {
		q.cond.Wait()
	}
	return q.take()
}

// tryPop is pop without waiting: ok is false if no task is queued now;
// done reports that the queue is closed and empty.
func (q *workQueue[T]) tryPop() (t T, ok, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	t, ok = q.take()
	return t, ok, !ok && q.closed
}

// take removes the next task, if any. The caller holds q.mu.
func (q *workQueue[T]) take() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	var t T
	if q.lifo {
		last := len(q.items) - 1
		t = q.items[last]
		q.items[last] = zero
		q.items = q.items[:last]
	} else {
		t = q.items[q.head]
		q.items[q.head] = zero
		q.head++
		if q.head == len(q.items) {
			q.items, q.head = q.items[:0], 0
		} else if q.head > 1024 && q.head*2 > len(q.items) {
			n := copy(q.items, q.items[q.head:])
			clear(q.items[n:])
			q.items, q.head = q.items[:n], 0
		}
	}
	return t, true
}

// close wakes every consumer; pop returns false once the queue is empty.
func (q *workQueue[T]) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
