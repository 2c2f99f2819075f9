package fsverity

import (
	"context"
	"errors"
	"runtime"
	"sync"
)

// FileResult is the fs-verity digest of one file.
type FileResult struct {
	Path string
	Size int64
	// Digest is set by a SHA256 pool, Digest512 by a SHA512 pool.
	Digest    Digest
	Digest512 Digest512
}

// PoolOptions configures a Pool.
type PoolOptions struct {
	// Algorithm defaults to SHA256.
	Algorithm Algorithm
	// Workers defaults to runtime.GOMAXPROCS(0).
	Workers int
}

// ErrPoolClosed is returned by Submit after Wait.
var ErrPoolClosed = errors.New("fs-verity pool: submit after wait")

// Pool digests files on a fixed set of workers, each with its own Hasher
// and read buffer. Results are handed to the callbacks one at a time, in
// submission order, whatever order the workers finish in; so callbacks
// need no locking and their side effects are deterministic. At most a
// bounded number of submitted files are outstanding: Submit blocks when
// the pool is that far ahead of the callbacks.
//
// The first failure (a file that cannot be read, a callback error, or the
// context ending), in submission order, stops the pool: later files are
// not digested, later callbacks are not called, and Wait returns it.
type Pool struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	alg    Algorithm

	jobs  chan *poolTask // to the workers
	order chan *poolTask // to the deliverer, in submission order

	workers   sync.WaitGroup
	delivered chan struct{} // closed when the deliverer has finished
	err       error         // deliverer's first error; read after delivered

	mu      sync.Mutex // serialises Submit and closing
	closed  bool
	stopErr error // why a Submit was refused (pool stopped)
}

type poolTask struct {
	path  string
	done  func(FileResult) error
	res   FileResult
	err   error
	ready chan struct{}
}

// NewPool starts a pool. Call Wait to release it.
func NewPool(ctx context.Context, opts PoolOptions) *Pool {
	alg := opts.Algorithm
	if alg == 0 {
		alg = SHA256
	}
	_ = NewHasher(alg) // panics early on an unknown algorithm
	n := opts.Workers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &Pool{
		ctx:       ctx,
		cancel:    cancel,
		alg:       alg,
		jobs:      make(chan *poolTask, 2*n),
		order:     make(chan *poolTask, 4*n),
		delivered: make(chan struct{}),
	}
	p.workers.Add(n)
	for range n {
		go p.work()
	}
	go p.deliver()
	return p
}

func (p *Pool) work() {
	defer p.workers.Done()
	h := NewHasher(p.alg)
	for t := range p.jobs {
		if p.ctx.Err() != nil {
			t.err = context.Cause(p.ctx)
			close(t.ready)
			continue
		}
		n, err := h.digestFile(p.ctx, t.path)
		t.res = FileResult{Path: t.path, Size: n}
		switch {
		case err != nil:
			t.err = err
		case p.alg == SHA256:
			t.res.Digest = h.Digest()
		default:
			t.res.Digest512 = h.Digest512()
		}
		close(t.ready)
	}
}

func (p *Pool) deliver() {
	defer close(p.delivered)
	for t := range p.order {
		<-t.ready
		if p.err != nil {
			continue
		}
		err := t.err
		if err == nil && t.done != nil {
			err = t.done(t.res)
		}
		if err != nil {
			p.err = err
			p.cancel(err)
		}
	}
}

// Submit queues the file at path. done (may be nil) receives its result
// on the pool's delivery goroutine, after the callbacks of all earlier
// submissions; it must not call Submit or Wait. An error from done stops
// the pool. Submit returns an error only when the pool has stopped or
// Wait was called; the reason is returned by Wait. Submit is safe to call
// from several goroutines (their relative order is then the order in
// which the calls got through).
func (p *Pool) Submit(path string, done func(FileResult) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPoolClosed
	}
	t := &poolTask{path: path, done: done, ready: make(chan struct{})}
	select {
	case p.order <- t:
	case <-p.ctx.Done():
		p.stopErr = context.Cause(p.ctx)
		return p.stopErr
	}
	select {
	case p.jobs <- t:
	case <-p.ctx.Done():
		t.err = context.Cause(p.ctx)
		close(t.ready)
		return t.err
	}
	return nil
}

// Wait waits for every submitted file and callback, releases the workers
// and returns the first error in submission order, or nil.
func (p *Pool) Wait() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.jobs)
		close(p.order)
	}
	p.mu.Unlock()
	p.workers.Wait()
	<-p.delivered
	p.cancel(nil)
	if p.err == nil {
		// A Submit refused by a context ended after all earlier
		// files succeeded: the caller's input was not all digested.
		return p.stopErr
	}
	return p.err
}

// DigestFiles computes the SHA-256 fs-verity digests of paths on workers
// goroutines (0: runtime.GOMAXPROCS(0)). Result i belongs to paths[i]. On
// failure it returns the error of the first failing path in input order
// (or the context's error) and no results.
func DigestFiles(ctx context.Context, paths []string, workers int) ([]FileResult, error) {
	out := make([]FileResult, len(paths))
	p := NewPool(ctx, PoolOptions{Algorithm: SHA256, Workers: workers})
	for i, path := range paths {
		if err := p.Submit(path, func(r FileResult) error {
			out[i] = r
			return nil
		}); err != nil {
			break
		}
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
