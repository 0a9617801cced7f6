package loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"kwatch/guest"
	"sync"
	"time"

	"kwatch/event"
)

// runOutputKept is how much of a --run command's output is kept from its
// start and from its end; what lies between is counted, not kept.
const runOutputKept = 32 << 10

// stopped is why kwatch stopped a --run command before it ended.
type stopped string

func (s stopped) Error() string { return string(s) }

const (
	stoppedBySave  stopped = "stopped by a new save"
	stoppedForLoad stopped = "stopped: kwatch loads another build"
)

// runJob is the --run commands running in the background after a load.
type runJob struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// startRun runs the --run commands in the background: the loop goes on, and a
// save stops them (see cancelRun).
func (l *loop) startRun(ctx context.Context, s guest.Session) {
	if len(l.cfg.Run) == 0 {
		return
	}
	rctx, cancel := context.WithCancelCause(ctx)
	j := &runJob{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(j.done)
		l.runCommands(rctx, s)
	}()
	l.running = j
}

// runDone is closed when the running --run commands end; nil when none run.
func (l *loop) runDone() <-chan struct{} {
	if l.running == nil {
		return nil
	}
	return l.running.done
}

// cancelRun stops the running --run commands, if any, for why; it does not
// wait for them to end.
func (l *loop) cancelRun(why error) {
	if l.running != nil {
		l.running.cancel(why)
	}
}

// stopRun stops the running --run commands, if any, and waits until they
// ended (in the guest too): a command may hold the module open.
func (l *loop) stopRun(why error) {
	if l.running == nil {
		return
	}
	l.running.cancel(why)
	<-l.running.done
	l.running = nil
}

// runCommands runs the --run commands one after another and reports each;
// it returns whether one failed. A command still running after
// cfg.RunTimeout is killed, and fails. When ctx ends, the command running is
// killed (with every process it started in the guest) and the rest are not run.
func (l *loop) runCommands(ctx context.Context, s guest.Session) (failed bool) {
	for _, cmd := range l.cfg.Run {
		out := &keptOutput{keep: runOutputKept}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if l.cfg.RunTimeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, l.cfg.RunTimeout)
		}
		exit, err := s.RunStream(cctx, cmd, out, out)
		timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		e := event.Event{Type: event.KindRunOutput, Time: time.Now(), Command: cmd, Output: out.String()}
		var why stopped
		switch {
		case ctx.Err() != nil:
			if errors.As(context.Cause(ctx), &why) {
				e.Message = why.Error()
				l.report.Report(e)
			}
			return failed
		case timedOut:
			e.Message = fmt.Sprintf("killed after %s (--run-timeout)", l.cfg.RunTimeout)
			failed = true
		case err != nil:
			l.error(fmt.Errorf("running %q in the guest: %w", cmd, err))
			failed = true
			continue
		default:
			e.Exit = &exit
			failed = failed || exit != 0
		}
		l.report.Report(e)
	}
	return failed
}

// keptOutput keeps the first and the last keep bytes written to it and
// counts the rest, so a command's output costs bounded memory whatever it
// prints. Safe for concurrent writes: stdout and stderr come from two
// goroutines.
type keptOutput struct {
	keep int

	mu    sync.Mutex
	head  []byte
	tail  []byte // the newest bytes past head: the last keep of them count
	total int
}

func (k *keptOutput) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.total += len(p)
	n := min(k.keep-len(k.head), len(p))
	k.head = append(k.head, p[:n]...)
	k.tail = append(k.tail, p[n:]...)
	if len(k.tail) > 2*k.keep {
		k.tail = append(k.tail[:0], k.tail[len(k.tail)-k.keep:]...)
	}
	return len(p), nil
}

// String returns the output kept, with a line saying how much was cut; the
// cut takes whole lines where the head and the tail have line ends.
func (k *keptOutput) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	head, tail := k.head, k.tail[max(0, len(k.tail)-k.keep):]
	if k.total == len(head)+len(tail) {
		return string(head) + string(tail)
	}
	if i := bytes.LastIndexByte(head, '\n'); i >= 0 {
		head = head[:i+1]
	}
	if i := bytes.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
		tail = tail[i+1:]
	}
	nl := "\n"
	if len(head) > 0 && head[len(head)-1] == '\n' {
		nl = ""
	}
	return fmt.Sprintf("%s%s[... %d bytes cut ...]\n%s", head, nl, k.total-len(head)-len(tail), tail)
}
