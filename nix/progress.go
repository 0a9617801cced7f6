package nix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"
)

// Progress shows a long nix build (the first VM build compiles or fetches a
// kernel) to a person: nix's messages and build log lines as they come,
// and where it is: the elapsed time, the derivation being built, and the
// builds and downloads done out of those nix expects. On a terminal that is
// one status line below the log, rewritten; elsewhere one line per
// derivation started. It reads nix's --log-format internal-json.
type Progress struct {
	W        io.Writer
	Terminal bool

	mu      sync.Mutex
	start   time.Time
	partial []byte
	acts    map[int64]activity
	counts  map[int][4]int64 // activity type -> nix's done, expected, running, failed
	status  string           // the status line on the terminal now
	lines   *tailWriter      // the last lines printed, for nix's error message
}

type activity struct {
	typ    int
	text   string
	prefix string // a build's log lines start with it, as nix -L prints them: "pname> "
}

// nix's activity and result types (libutil/logging.hh).
const (
	actFileTransfer = 101
	actCopyPaths    = 103
	actBuilds       = 104
	actBuild        = 105

	lvlInfo = 3

	resBuildLogLine = 101
	resSetPhase     = 104
	resProgress     = 105
)

type event struct {
	Action string            `json:"action"`
	ID     int64             `json:"id"`
	Type   int               `json:"type"`
	Level  int               `json:"level"`
	Text   string            `json:"text"`
	Msg    string            `json:"msg"`
	Fields []json.RawMessage `json:"fields"`
}

// Write takes nix's stderr; lines that are not internal-json pass through.
func (p *Progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acts == nil {
		p.start, p.acts, p.counts = time.Now(), map[int64]activity{}, map[int][4]int64{}
	}
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

// Close ends the status line.
func (p *Progress) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 {
		p.line(string(p.partial))
		p.partial = nil
	}
	p.setStatus("")
}

func (p *Progress) line(l string) {
	js, ok := strings.CutPrefix(l, "@nix ")
	var e event
	if !ok || json.Unmarshal([]byte(js), &e) != nil {
		p.print(l)
		return
	}
	switch e.Action {
	case "msg":
		p.print(e.Msg)
	case "start":
		a := activity{typ: e.Type, text: e.Text}
		switch {
		case e.Type == actBuild:
			name, machine := buildName(e)
			a.text, a.prefix = name+machine, pname(name)+"> "
			if !p.Terminal {
				p.print(fmt.Sprintf("nix: %s building %s", p.elapsed(), a.text))
			}
		case !p.Terminal && e.Level <= lvlInfo && e.Text != "":
			p.print(e.Text + "...") // as nix's plain log shows it: "copying path '…' from '…'..."
		}
		p.acts[e.ID] = a
	case "stop":
		delete(p.acts, e.ID)
	case "result":
		switch e.Type {
		case resBuildLogLine:
			if len(e.Fields) > 0 {
				var s string
				json.Unmarshal(e.Fields[0], &s)
				p.print(p.acts[e.ID].prefix + s)
			}
		case resSetPhase:
			if a, ok := p.acts[e.ID]; ok && len(e.Fields) > 0 {
				var phase string
				json.Unmarshal(e.Fields[0], &phase)
				a.text, _, _ = strings.Cut(a.text, " (")
				a.text += " (" + phase + ")"
				p.acts[e.ID] = a
			}
		case resProgress:
			var n [4]int64
			for i := 0; i < len(n) && i < len(e.Fields); i++ {
				json.Unmarshal(e.Fields[i], &n[i])
			}
			if a, ok := p.acts[e.ID]; ok {
				p.counts[a.typ] = n
			}
		}
	}
	p.redraw()
}

// buildName is a build's derivation name, without its store path, and
// " on MACHINE" when a remote machine builds it.
func buildName(e event) (name, machine string) {
	var drv string
	if len(e.Fields) > 1 {
		json.Unmarshal(e.Fields[0], &drv)
		json.Unmarshal(e.Fields[1], &machine)
	}
	name = strings.TrimSuffix(path.Base(drv), ".drv")
	if len(name) > 33 && name[32] == '-' {
		name = name[33:] // the store hash
	}
	if name == "" {
		name = e.Text
	}
	if machine != "" {
		machine = " on " + machine
	}
	return name, machine
}

// pname is a derivation name without its version, as nix splits it: at
// the first '-' followed by a digit ("linux-6.18.5" is "linux").
func pname(name string) string {
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '-' && name[i+1] >= '0' && name[i+1] <= '9' {
			return name[:i]
		}
	}
	return name
}

func (p *Progress) elapsed() string {
	d := time.Since(p.start).Round(time.Second)
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

// print writes a log line, the status line kept below it.
func (p *Progress) print(s string) {
	status := p.status
	p.setStatus("")
	fmt.Fprintln(p.W, s)
	if p.lines != nil {
		fmt.Fprintln(p.lines, s)
	}
	p.setStatus(status)
}

func (p *Progress) setStatus(s string) {
	if !p.Terminal || s == p.status {
		return
	}
	fmt.Fprint(p.W, "\r\033[K"+s)
	p.status = s
}

// redraw puts the status line together: elapsed time, what is being built,
// builds and downloads done of those expected.
func (p *Progress) redraw() {
	if !p.Terminal {
		return
	}
	parts := []string{"nix: " + p.elapsed()}
	for _, a := range p.acts {
		if a.typ == actBuild {
			parts = append(parts, "building "+a.text)
			break
		}
	}
	if n := p.counts[actBuilds]; n[1] > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d built (%d%%)", n[0], n[1], n[0]*100/n[1]))
	}
	if n := p.counts[actCopyPaths]; n[1] > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d fetched", n[0], n[1]))
	}
	if n := p.counts[actFileTransfer]; n[1] > 0 {
		parts = append(parts, fmt.Sprintf("%.1f/%.1f MiB downloaded", float64(n[0])/(1<<20), float64(n[1])/(1<<20)))
	}
	p.setStatus(strings.Join(parts, " · "))
}
