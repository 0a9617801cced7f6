package loop

import (
	"context"
	"sync"
	"time"

	"kwatch/builder"
	"kwatch/event"
)

// netCheck runs the builder's correctness net in the background once the
// guest is idle after a fast build (a new build stops it), and sends what it
// found, if anything, on found.
type netCheck struct {
	found  chan *builder.Mismatch
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newNetCheck(ctx context.Context) *netCheck {
	n := &netCheck{found: make(chan *builder.Mismatch, 1)}
	n.ctx, n.cancel = context.WithCancel(ctx)
	return n
}

// stop stops a running check and waits for it.
func (n *netCheck) stop() {
	n.cancel()
	n.wg.Wait()
}

// start begins the check here, on the loop's goroutine, so that the next
// build, which stops it, cannot start before it.
func (n *netCheck) start(b builder.Builder, res builder.Result, report func(error)) {
	ctx := n.ctx
	if res.Path != builder.PathFast {
		return
	}
	check := b.BeginVerify(ctx)
	if check == nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		mm, err := check()
		switch {
		case err != nil && ctx.Err() == nil:
			report(err)
		case mm != nil:
			select {
			case n.found <- mm:
			case <-ctx.Done():
			}
		}
	}()
}

// fastPathWrong reports a module the full make built differently from the
// fast path as a bug, and loads the full make's, unless a build runs: that
// build rewrites the module, and is no fast one.
func (l *loop) fastPathWrong(ctx context.Context, mm *builder.Mismatch, building bool) {
	l.report.Report(event.Event{Type: event.KindFastPathBug, Time: time.Now(), Message: mm.Error() + "; the fast path is off for the rest of this run",
		Hint: "this is a bug in kwatch: please report it with the module's sources"})
	if mm.Err == nil && !building {
		l.deploy(ctx, builder.Result{KO: mm.KO, Path: builder.PathKbuild}, 0, time.Now())
	}
}
