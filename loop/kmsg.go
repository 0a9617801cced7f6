package loop

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"kwatch/event"
	"kwatch/guest"
	"kwatch/kmsg"
)

// markPrefix starts the lines kwatch itself writes to the guest's /dev/kmsg to
// find its place in the log; they are not shown.
const markPrefix = "kwatch-mark: "

// kmsgStream follows the guest's kernel log for the whole run, reconnecting
// when the connection drops and starting over when the guest rebooted.
type kmsgStream struct {
	g       guest.Guest
	report  event.Reporter
	crashes *crashWatch

	mu      sync.Mutex
	waiters map[string]chan struct{}
	recent  []string       // the newest messages, for explaining a failed load
	count   int            // messages seen so far; marks a place in recent
	kept    *[]kmsg.Record // every record while a load's are collected; nil otherwise
}

// maxCollected bounds the records one load collects for its KUnit results.
const maxCollected = 100_000

// recentLines is how many messages are kept for explaining a failed load.
const recentLines = 200

func newKmsgStream(g guest.Guest, r event.Reporter, crashes *crashWatch) *kmsgStream {
	return &kmsgStream{g: g, report: r, crashes: crashes, waiters: map[string]chan struct{}{}}
}

func (k *kmsgStream) run(ctx context.Context) {
	var (
		after  uint64
		boot   string
		live   bool // past the history that was in the log before kwatch attached
		attach string
	)
	for ctx.Err() == nil {
		s, err := k.g.LogSession(ctx)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		if b := s.BootID(); b != boot {
			boot, after, live = b, 0, false
			// Unique per run: an earlier run's marker is part of the history to skip.
			attach = fmt.Sprintf("%sattached to boot %s at %d", markPrefix, b, time.Now().UnixNano())
			if err := s.WriteKmsg(ctx, attach); err != nil {
				sleep(ctx, time.Second)
				continue
			}
		}
		s.StreamKmsg(ctx, after, func(r kmsg.Record) {
			after = r.Seq
			switch {
			case !live:
				live = r.Message == attach
			case strings.HasPrefix(r.Message, markPrefix):
				k.seen(r.Message)
			default:
				k.keep(r)
				k.crashes.kmsgLine(r.Message)
				k.report.Report(event.Kmsg(r))
			}
		})
		sleep(ctx, 200*time.Millisecond)
	}
}

// sync writes msg to the guest's kernel log and waits (briefly) until the
// stream has read it, so everything logged before it has been reported.
func (k *kmsgStream) sync(ctx context.Context, s guest.Session, msg string) {
	msg = markPrefix + msg
	ch := make(chan struct{})
	k.mu.Lock()
	k.waiters[msg] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.waiters, msg)
		k.mu.Unlock()
	}()
	if err := s.WriteKmsg(ctx, msg); err != nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
}

func (k *kmsgStream) keep(r kmsg.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kept != nil && len(*k.kept) < maxCollected {
		*k.kept = append(*k.kept, r)
	}
	k.count++
	k.recent = append(k.recent, r.Message)
	if len(k.recent) > recentLines {
		k.recent = k.recent[len(k.recent)-recentLines:]
	}
}

// collect keeps every record logged from now until the returned func is
// called, which returns them (the first maxCollected).
func (k *kmsgStream) collect() (stop func() []kmsg.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	kept := []kmsg.Record{}
	k.kept = &kept
	return func() []kmsg.Record {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.kept = nil
		return kept
	}
}

// mark returns the current place in the log, for since.
func (k *kmsgStream) mark() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.count
}

// since returns the messages logged after mark (as many as are kept).
func (k *kmsgStream) since(mark int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := min(k.count-mark, len(k.recent))
	return append([]string(nil), k.recent[len(k.recent)-n:]...)
}

func (k *kmsgStream) seen(msg string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ch, ok := k.waiters[msg]; ok {
		close(ch)
		delete(k.waiters, msg)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
