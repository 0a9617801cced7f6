// Package debugger runs gdb attached to the guest's gdbstub, with the
// symbols of the module kwatch loaded (and of the kernel when a vmlinux is
// at hand), and tells the session when the module is reloaded.
package debugger

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kwatch/debuginfo"
)

// Guest runs shell commands in the guest.
type Guest interface {
	Run(ctx context.Context, cmd string) (stdout, stderr []byte, exit int, err error)
}

// Module is a built .ko that may be the one loaded in the guest.
type Module struct {
	Name, KO string
}

// Session is one gdb run.
type Session struct {
	GDB      string // gdb's path
	Socket   string // QEMU's gdbstub
	StateDir string // where the follow file goes (0700)
	Guest    Guest
	// Modules lists the builds the loaded module may come from, best first;
	// it is asked again after a reload.
	Modules func() []Module
	Vmlinux string // "" when there is no kernel image with symbols
	// DialStub connects to the gdbstub, for a kernel that does not say
	// where modules are (no /sys/module/NAME/sections).
	DialStub func() (Stub, error)
	Args     []string // the user's, passed to gdb unchanged
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	Notice   func(string) // one-line messages before gdb starts

	slide uint64 // KASLR's, for vmlinux's addresses
}

//go:embed follow.py
var followPy []byte

// Stub reads guest memory until it detaches.
type Stub interface {
	Memory
	Detach() error
}

// placed is where the session's symbols for the module are.
type placed struct {
	mod     Module
	text    uint64
	buildID string
	// fromMemory: the kernel has no sysfs sections, so the module was found
	// through the stub, which gdb holds while it runs: reloads go unseen.
	fromMemory bool
}

// Run starts gdb and waits for it; the exit code is gdb's.
func (s *Session) Run(ctx context.Context) (int, error) {
	setup := []string{"set confirm off"}
	// A guest busy under TCG may take seconds to answer; one that does not
	// answer in a minute is not going to.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if s.Vmlinux != "" {
		slide, err := s.kernelSlide(sctx)
		if err != nil {
			return 0, err
		}
		s.slide = slide
		setup = append(setup, fmt.Sprintf("symbol-file -o 0x%x %s", slide, s.Vmlinux))
	}
	p, cmd, err := s.place(sctx)
	cancel()
	if err != nil {
		return 0, err
	}
	if p.fromMemory && s.Notice != nil {
		s.Notice(fmt.Sprintf("the guest kernel does not list module sections (no CONFIG_KALLSYMS): %s was found in its module list, and this session cannot see it reloaded: run kwatch gdb again after a reload", p.mod.Name))
	}
	follow := filepath.Join(s.StateDir, "gdb-follow")
	script := filepath.Join(s.StateDir, "gdb-follow.py")
	if err := os.WriteFile(script, followPy, 0o600); err != nil {
		return 0, fmt.Errorf("writing gdb's helper: %w", err)
	}
	defer os.Remove(script)
	// The helper attaches and loads the module quietly: gdb's own words for
	// that are a warning about the missing executable and a line per section.
	gen := 1
	msg := fmt.Sprintf("kwatch: attached to the guest (%s); %s's symbols from %s are at .text 0x%x", s.Socket, p.mod.Name, p.mod.KO, p.text)
	if err := writeFollow(follow, gen, msg, "", []string{"target remote " + s.Socket, cmd}); err != nil {
		return 0, err
	}
	defer os.Remove(follow)
	setup = append(setup, "source "+script, "set confirm on")
	var args []string
	args = append(args, "-q")
	for _, c := range setup {
		args = append(args, "-ex", c)
	}
	g := exec.Command(s.GDB, append(args, s.Args...)...)
	g.Stdin, g.Stdout, g.Stderr = s.Stdin, s.Stdout, s.Stderr
	g.Env = append(os.Environ(), "KWATCH_GDB_FOLLOW="+follow)
	// ^C belongs to gdb (it stops the guest): kwatch must not die of it.
	// Nor of a closed terminal's SIGHUP, which gdb gets too: kwatch waits
	// for gdb to end, then makes sure the guest runs.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := g.Start(); err != nil {
		return 0, fmt.Errorf("starting gdb: %w", err)
	}
	// Not ctx: kwatch's first ^C cancels it, and a ^C in a session is gdb's
	// (it stops the guest), not the end of following reloads.
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if !p.fromMemory {
		wg.Add(1)
		go func() { defer wg.Done(); s.follow(fctx, p, follow, gen) }()
	}
	err = g.Wait()
	stop()
	wg.Wait()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), nil
		}
		return 0, fmt.Errorf("gdb: %w", err)
	}
	return 0, nil
}

// place finds which build is loaded in the guest and where.
func (s *Session) place(ctx context.Context) (placed, string, error) {
	mods := s.Modules()
	if len(mods) == 0 {
		return placed{}, "", fmt.Errorf("no built module found: run kwatch on the module's directory first")
	}
	loaded, err := s.loaded(ctx, mods)
	if err != nil {
		return placed{}, "", err
	}
	m, l, exact := pick(mods, loaded)
	if l == nil {
		var names []string
		for _, m := range mods {
			names = append(names, m.Name)
		}
		return placed{}, "", fmt.Errorf("none of %s is loaded in the guest: run kwatch on the module's directory first", strings.Join(unique(names), ", "))
	}
	if !exact && s.Notice != nil {
		s.Notice(fmt.Sprintf("the guest's %s is not the build in %s (their build IDs differ): its symbols may be off", m.Name, m.KO))
	}
	p := placed{mod: m, buildID: l.BuildID}
	if len(l.Sections) == 0 {
		if l.Sections, err = s.sectionsFromMemory(m); err != nil {
			return placed{}, "", err
		}
		p.fromMemory = true
	}
	cmd, err := debuginfo.AddSymbolFile(m.KO, l.Sections, l.Live)
	if err != nil {
		return placed{}, "", err
	}
	p.text = l.Sections[".text"]
	return p, cmd, nil
}

// sectionsFromMemory finds the module in the kernel's module list through
// the stub, for a kernel without sysfs sections.
func (s *Session) sectionsFromMemory(m Module) (map[string]uint64, error) {
	if s.Vmlinux == "" {
		return nil, fmt.Errorf("the guest kernel does not say where %s is loaded (no /sys/module/%s/sections, CONFIG_KALLSYMS is off), and without its vmlinux kwatch cannot look: pass --kdir with the kernel's build tree", m.Name, m.Name)
	}
	head, err := debuginfo.SymbolValue(s.Vmlinux, "modules")
	if err != nil {
		return nil, err
	}
	st, err := s.DialStub()
	if err != nil {
		return nil, err
	}
	secs, err := SectionsFromMemory(st, head+s.slide, m.Name, m.KO)
	if derr := st.Detach(); err == nil {
		err = derr
	}
	return secs, err
}

func (s *Session) loaded(ctx context.Context, mods []Module) (map[string]*debuginfo.Loaded, error) {
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	out, _, _, err := s.Guest.Run(ctx, debuginfo.GuestScript(unique(names)))
	if err != nil {
		return nil, fmt.Errorf("asking the guest where the module is: %w", err)
	}
	return debuginfo.ParseGuest(out), nil
}

// pick chooses the first build whose build ID is the loaded module's; when
// none matches (or the guest does not say), the first loaded one.
func pick(mods []Module, loaded map[string]*debuginfo.Loaded) (Module, *debuginfo.Loaded, bool) {
	var first *Module
	for i, m := range mods {
		l := loaded[m.Name]
		if l == nil {
			continue
		}
		if id, _ := debuginfo.BuildID(m.KO); id != "" && id == l.BuildID {
			return m, l, true
		}
		if first == nil {
			first = &mods[i]
		}
	}
	if first == nil {
		return Module{}, nil, false
	}
	l := loaded[first.Name]
	return *first, l, l.BuildID == ""
}

// follow polls the guest while gdb runs and, when the module was reloaded,
// tells the session where its symbols went. A guest stopped in gdb does not
// answer, which is fine: nothing moves while it stands still, and the next
// poll asks again.
func (s *Session) follow(ctx context.Context, p placed, path string, gen int) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, gen = s.poll(ctx, p, path, gen)
	}
}

// poll asks the guest where the module is, each question for a few
// seconds at most, and writes the follow file's next generation if it moved.
func (s *Session) poll(ctx context.Context, p placed, path string, gen int) (placed, int) {
	const ask = 5 * time.Second
	lctx, cancel := context.WithTimeout(ctx, ask)
	loaded, err := s.loaded(lctx, []Module{p.mod})
	cancel()
	if err != nil {
		return p, gen
	}
	l := loaded[p.mod.Name]
	switch {
	case l == nil && p.text == 0, l != nil && l.Sections[".text"] == p.text && l.BuildID == p.buildID:
		return p, gen
	case l == nil:
		msg := fmt.Sprintf("kwatch: %s was unloaded from the guest; its symbols are stale until it is loaded again", p.mod.Name)
		writeFollow(path, gen+1, msg, msg, nil)
		p.text = 0
		return p, gen + 1
	}
	pctx, cancel := context.WithTimeout(ctx, ask)
	defer cancel()
	np, cmd, err := s.place(pctx)
	if err != nil {
		return p, gen
	}
	var cmds []string
	if p.text != 0 {
		cmds = append(cmds, fmt.Sprintf("remove-symbol-file -a 0x%x", p.text))
	}
	cmds = append(cmds, cmd)
	writeFollow(path, gen+1,
		fmt.Sprintf("kwatch: %s was reloaded: its symbols now start at .text 0x%x and breakpoints by name are set again", np.mod.Name, np.text),
		fmt.Sprintf("kwatch: %s was reloaded (.text now 0x%x): its symbols and breakpoints follow at the next stop (^C stops now); until then a breakpoint may hit at its old address", np.mod.Name, np.text),
		cmds)
	return np, gen + 1
}

// writeFollow writes the file the session's helper polls.
func writeFollow(path string, gen int, now, later string, cmds []string) error {
	text := strings.Join(append([]string{strconv.Itoa(gen), now, later}, cmds...), "\n") + "\n"
	if err := os.WriteFile(path+".tmp", []byte(text), 0o600); err != nil {
		return fmt.Errorf("writing gdb's follow file: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// kernelSlide is how far KASLR moved the kernel from vmlinux's addresses:
// the guest's _text from /proc/kallsyms against vmlinux's. A kernel without
// kallsyms is taken as not moved.
func (s *Session) kernelSlide(ctx context.Context) (uint64, error) {
	linked, err := debuginfo.SymbolValue(s.Vmlinux, "_text")
	if err != nil {
		return 0, err
	}
	out, _, _, err := s.Guest.Run(ctx, "grep -m1 ' _text$' /proc/kallsyms 2>/dev/null; true")
	if err != nil {
		return 0, fmt.Errorf("asking the guest where its kernel is: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0, nil
	}
	at, err := strconv.ParseUint(f[0], 16, 64)
	if err != nil || at == 0 {
		return 0, nil
	}
	return at - linked, nil
}

func unique(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
