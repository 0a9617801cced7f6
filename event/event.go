// Package event is what kwatch tells its user: the kinds of event, the --json
// schema (one object per line) and the terminal renderer.
package event

import (
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"sync"
	"time"

	"kwatch/kmsg"
)

// Event is one thing that happened in the loop. With --json each event is one
// line on stdout; the human reporter turns them into status lines.
type Event struct {
	Type Kind      `json:"event"`
	Time time.Time `json:"time"`

	Module      string   `json:"module,omitempty"`
	Message     string   `json:"message,omitempty"`
	Diagnostics []string `json:"diagnostics,omitempty"`
	Hint        string   `json:"hint,omitempty"`

	// build_ok, loaded: how the module was built (builder.PathFast,
	// builder.PathKbuild), and why the fast path did not replay it, if it
	// fell back ("Kbuild changed")
	Path     string `json:"path,omitempty"`
	Fallback string `json:"fallback,omitempty"`

	// Timings in milliseconds.
	BuildMS  int64 `json:"build_ms,omitempty"`
	UploadMS int64 `json:"upload_ms,omitempty"`
	ReloadMS int64 `json:"reload_ms,omitempty"`
	TotalMS  int64 `json:"total_ms,omitempty"`

	UploadBytes int64 `json:"upload_bytes,omitempty"` // loaded: the size of the module copied into the guest
	Goroutines  int   `json:"goroutines,omitempty"`   // loaded, with WithStats: kwatch's goroutines at that moment

	// run_output: Exit is nil for a command stopped before it ended, and
	// Message says why; Output keeps the head and tail of a long one.
	Command string `json:"command,omitempty"`
	Output  string `json:"output,omitempty"`
	Exit    *int   `json:"exit,omitempty"`

	// kmsg
	Seq   uint64  `json:"seq,omitempty"`
	Level *int    `json:"level,omitempty"`
	KTime float64 `json:"ktime,omitempty"`

	// vm_ready
	Addr string `json:"addr,omitempty"`

	// load_failed: what holds a module that could not be removed
	Holders []string `json:"holders,omitempty"`

	// crash: Module and Function say where the report points; InModule
	// whether that is UserModule, the module being worked on.
	Severity   string   `json:"severity,omitempty"` // warning, oops or panic
	Title      string   `json:"title,omitempty"`
	Lines      []string `json:"lines,omitempty"`
	Function   string   `json:"function,omitempty"`
	InModule   *bool    `json:"in_module,omitempty"`
	UserModule string   `json:"user_module,omitempty"`
	Source     string   `json:"source,omitempty"` // file:line of Function, from the module's debug info

	// kunit_case: one test case's result; Message says why it failed,
	// was skipped or crashed.
	Suite  string `json:"suite,omitempty"`
	Case   string `json:"case,omitempty"` // "" for the suite as a whole (its init failed)
	Status string `json:"status,omitempty"`
	Param  string `json:"param,omitempty"` // a parameterised case: the first parameter it failed with
	File   string `json:"file,omitempty"`  // a failed expectation or assertion: where it is
	Line   int    `json:"line,omitempty"`

	*KUnitSummary // kunit_summary

	record *kmsg.Record // kmsg: the record, for the human formatter
}

// KUnitSummary counts the cases of a module's KUnit suites by how they went,
// and says how long they ran (by the kernel's clock).
type KUnitSummary struct {
	Passed  int   `json:"passed"`
	Failed  int   `json:"failed"`
	Skipped int   `json:"skipped"`
	Crashed int   `json:"crashed"`
	MS      int64 `json:"ms"`
}

// Kind says what an Event reports; it is the "event" field of --json.
type Kind string

const (
	KindBuildStart  Kind = "build_start"
	KindBuildOK     Kind = "build_ok"
	KindBuildFailed Kind = "build_failed"
	KindLoaded      Kind = "loaded"
	KindLoadFailed  Kind = "load_failed"
	KindRunOutput   Kind = "run_output"
	KindKernelLog   Kind = "kmsg"
	KindCrash       Kind = "crash"
	KindVMReady     Kind = "vm_ready"
	KindFastPathBug Kind = "fast_path_bug" // the fast path built another module than make
	KindKUnitCase   Kind = "kunit_case"
	KindKUnitSum    Kind = "kunit_summary"
	KindError       Kind = "error"
	KindNotice      Kind = "notice"
)

// Notice reports msg to r as a notice: something the user should know that
// is neither a failure nor a result.
func Notice(r Reporter, msg string) {
	r.Report(Event{Type: KindNotice, Time: time.Now(), Message: msg})
}

// Error reports err to r as an error event, with err's hint.
func Error(r Reporter, err error) {
	r.Report(Event{Type: KindError, Time: time.Now(), Message: err.Error(), Hint: Hint(err)})
}

// Hint returns how the user can fix err: the first hint that is not "" of
// an error in its chain with a Hint method, "" if none has one. Every error
// kwatch shows, whether in an event or as the exit status's message, finds
// its hint here.
func Hint(err error) string {
	for err != nil {
		var h interface {
			error
			Hint() string
		}
		if !errors.As(err, &h) {
			return ""
		}
		if hint := h.Hint(); hint != "" {
			return hint
		}
		err = errors.Unwrap(h)
	}
	return ""
}

// Kmsg returns the event that reports r, a line of the guest's kernel log;
// the human renderer formats it the way the kernel would.
func Kmsg(r kmsg.Record) Event {
	level := r.Level
	return Event{Type: KindKernelLog, Time: time.Now(), Seq: r.Seq, Level: &level,
		KTime: r.Time.Seconds(), Message: r.Message, record: &r}
}

// Reporter receives events; implementations are safe for concurrent use
// because kernel log lines arrive from their own goroutine.
type Reporter interface {
	Report(Event)
}

type jsonReporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewJSON reports one JSON object per line.
func NewJSON(w io.Writer) Reporter { return &jsonReporter{enc: json.NewEncoder(w)} }

func (r *jsonReporter) Report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enc.Encode(e)
}

// WithStats adds kwatch's goroutine count to each loaded event r reports:
// a goroutine leak shows as a count that grows with the cycles (the bench's
// soak run reads it; KWATCH_DEBUG_STATS=1 turns it on with --json).
func WithStats(r Reporter) Reporter { return statsReporter{r} }

type statsReporter struct{ Reporter }

func (r statsReporter) Report(e Event) {
	if e.Type == KindLoaded {
		e.Goroutines = runtime.NumGoroutine()
	}
	r.Reporter.Report(e)
}
