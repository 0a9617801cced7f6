package crash

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addLogs seeds f with the captured logs of testdata, besides testdata/fuzz.
func addLogs(f *testing.F, add func(log string)) {
	logs, _ := filepath.Glob("testdata/*.log")
	for _, p := range logs {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		add(string(data))
	}
}

// FuzzDetector feeds a Detector any console or kernel log a guest could
// print, one line at a time, and checks the reports against the log.
func FuzzDetector(f *testing.F) {
	addLogs(f, func(log string) { f.Add(log) })
	f.Fuzz(func(t *testing.T, log string) {
		lines := strings.Split(log, "\n")
		reports, _ := feed(lines)
		log = strings.ReplaceAll(log, "\r", "") // what clean takes out
		if len(reports) > len(lines) {
			t.Fatalf("%d reports from %d lines", len(reports), len(lines))
		}
		for _, r := range reports {
			if r.Severity <= None || r.Severity > Fatal || r.Title == "" || len(r.Lines) == 0 {
				t.Fatalf("report without severity, title or lines: %+v", r)
			}
			if len(r.Lines) > maxLines+maxEndLines+1 { // and the "lines not shown" marker
				t.Fatalf("report of %d lines, want at most %d", len(r.Lines), maxLines+maxEndLines+1)
			}
			for _, l := range r.Lines {
				if !strings.Contains(log, l) && !strings.HasPrefix(l, "[... ") {
					t.Fatalf("report line %q is not in the log", l)
				}
			}
			for _, s := range append(strings.Fields(r.Title), r.Module, r.Function) {
				if !strings.Contains(log, s) {
					t.Fatalf("report %+v: %q is not in the log", r, s)
				}
			}
			if r.InModule(r.Module) && r.Module == "" {
				t.Fatalf("report %+v is in the module named \"\"", r)
			}
		}
	})
}

// FuzzLoadError explains any insmod/rmmod output and kernel log around a load.
func FuzzLoadError(f *testing.F) {
	addLogs(f, func(log string) { f.Add("insmod: ERROR: could not insert module x.ko: Invalid parameters", log) })
	f.Fuzz(func(t *testing.T, output, kernel string) {
		cause, hint := LoadError(output, strings.Split(kernel, "\n"))
		if cause == "" {
			t.Fatalf("LoadError(%q, %q): no cause", output, kernel)
		}
		for _, s := range []string{cause, hint} {
			if strings.ContainsAny(s, "\r\n") {
				t.Fatalf("LoadError(%q, %q) = %q, %q: not one line", output, kernel, cause, hint)
			}
		}
		// What it quotes comes from the input: distinct values, each once,
		// quoted (an invalid byte becomes \xNN: four times as long).
		if limit := 4*(len(output)+len(kernel)) + 300; len(cause)+len(hint) > limit {
			t.Fatalf("LoadError: %d bytes of cause and hint from %d of input", len(cause)+len(hint), len(output)+len(kernel))
		}
	})
}
