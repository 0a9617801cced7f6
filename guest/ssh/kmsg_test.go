package ssh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"kwatch/kmsg"
)

func TestDeliver(t *testing.T) {
	const log = "6,5,100,-;five\n" +
		" SUBSYSTEM=acpi\n" +
		" DEVICE=+acpi:PNP0A08:00\n" +
		"6,6,200,-;six\n" +
		"4,9,300,-;nine\n"
	lost := func(n int) string { return "kwatch: " + strconv.Itoa(n) + " kernel log lines lost" }
	tests := []struct {
		name     string
		next     uint64
		want     []string // messages, or the start of one
		wantSeqs []uint64
		wantNext uint64
	}{
		{"replay from before the oldest", 3, []string{lost(2), "five", "six", lost(2), "nine"}, []uint64{4, 5, 6, 8, 9}, 10},
		{"already seen up to six", 7, []string{lost(2), "nine"}, []uint64{8, 9}, 10},
		{"resume exactly", 6, []string{"six", lost(2), "nine"}, []uint64{6, 8, 9}, 10},
		{"all seen", 10, nil, nil, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []kmsg.Record
			next, err := deliver(strings.NewReader(log), tt.next, func(r kmsg.Record) { got = append(got, r) })
			if err != nil {
				t.Fatal(err)
			}
			if next != tt.wantNext {
				t.Errorf("next = %d, want %d", next, tt.wantNext)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d records %+v, want %d: %q", len(got), got, len(tt.want), tt.want)
			}
			for i, r := range got {
				if !strings.HasPrefix(r.Message, tt.want[i]) || r.Seq != tt.wantSeqs[i] {
					t.Errorf("record %d = seq %d %q, want seq %d %q", i, r.Seq, r.Message, tt.wantSeqs[i], tt.want[i])
				}
			}
		})
	}
}

// TestStreamKmsg follows a real kernel log: the dropbear fixture runs on
// this machine, so its /dev/kmsg stands in for a guest's.
func TestStreamKmsg(t *testing.T) {
	_, cfg := newSSHD(t)
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skip("no /dev/kmsg here")
	}
	c := dial(t, cfg)
	ctx := testContext(t)
	marker := fmt.Sprintf("kwatch test marker %d", time.Now().UnixNano())
	if err := c.WriteKmsg(ctx, marker); err != nil {
		t.Fatal(err)
	}

	// From the start: every record in order, up to the marker.
	var got []kmsg.Record
	streamCtx, cancel := context.WithCancel(ctx)
	err := c.StreamKmsg(streamCtx, 0, func(r kmsg.Record) {
		got = append(got, r)
		if r.Message == marker {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamKmsg: %v, want context.Canceled after the marker", err)
	}
	if got[0].Seq != 0 && !strings.Contains(got[0].Message, "lost") {
		t.Errorf("first record has seq %d and is no lost-lines notice", got[0].Seq)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("record %d has seq %d after seq %d", i, got[i].Seq, got[i-1].Seq)
		}
	}
	m := got[len(got)-1]
	if m.Level != 5 || m.Facility != 1 {
		t.Errorf("marker record %+v, want level 5 (notice) and facility 1 (user)", m)
	}

	// Resuming after the record before the marker gives the marker first.
	var first kmsg.Record
	streamCtx, cancel = context.WithCancel(ctx)
	c.StreamKmsg(streamCtx, m.Seq-1, func(r kmsg.Record) {
		first = r
		cancel()
	})
	if first.Seq != m.Seq || first.Message != marker {
		t.Errorf("StreamKmsg after seq %d started with %+v, want the marker", m.Seq-1, first)
	}

	// A record written while following arrives, and nothing from before.
	live := marker + " live"
	streamCtx, cancel = context.WithCancel(ctx)
	done := make(chan error, 1)
	var after []kmsg.Record
	go func() {
		done <- c.StreamKmsg(streamCtx, m.Seq, func(r kmsg.Record) {
			after = append(after, r)
			if r.Message == live {
				cancel()
			}
		})
	}()
	time.Sleep(500 * time.Millisecond) // most likely following by now; if not, the replay delivers it
	if err := c.WriteKmsg(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamKmsg: %v, want context.Canceled after the live marker", err)
	}
	for _, r := range after {
		if r.Seq <= m.Seq {
			t.Errorf("StreamKmsg after seq %d delivered seq %d", m.Seq, r.Seq)
		}
	}
}
