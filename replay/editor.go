package replay

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// compileLine is gen_compile_commands.py's reading of a cmd_ line: the
// compiler's arguments up to the .c file it compiles (what follows a ";",
// such as objtool, is not part of the compile).
var compileLine = regexp.MustCompile(`^(.* )([^ ]*\.c) *(;|$)`)

type compileCommand struct {
	Directory string `json:"directory"`
	File      string `json:"file"`
	Command   string `json:"command"`
}

// CompileCommands returns the compile_commands.json of the module's C
// objects, as the kernel's scripts/clang-tools/gen_compile_commands.py would
// write it, or nil if the module has no C source (only modpost's .mod.c).
func (g *Graph) CompileCommands() []byte {
	var cmds []compileCommand
	hasC := false
	for _, o := range g.Objects {
		if c, ok := g.compileCommand(o); ok {
			hasC = hasC || !strings.HasSuffix(c.File, ".mod.c")
			cmds = append(cmds, c)
		}
	}
	if !hasC {
		return nil
	}
	for i := range cmds {
		cmds[i].Command = forClang(cmds[i].Directory, cmds[i].Command)
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].File < cmds[j].File })
	out, _ := json.MarshalIndent(cmds, "", "  ")
	return append(out, '\n')
}

// compileCommand is o's entry in compile_commands.json, if o is an object
// compiled from C.
func (g *Graph) compileCommand(o *Object) (compileCommand, bool) {
	m := compileLine.FindStringSubmatch(o.Cmd)
	if m == nil || !strings.HasSuffix(o.Target, ".o") {
		return compileCommand{}, false
	}
	prefix := strings.NewReplacer(`\#`, "#", "$(pound)", "#").Replace(m[1])
	return compileCommand{Directory: o.dir, File: resolve(o.dir, m[2]), Command: prefix + m[2]}, true
}

// rejected is how clang names an option it will not take: "unknown
// argument: '-fconserve-stack'", "unsupported option '-mrecord-mcount' for
// target ...", "'-ftrivial-auto-var-init=zero' hasn't been enabled".
var rejected = regexp.MustCompile(`error: (?:unknown argument: |unsupported option )?'(-[^']+)'`)

// forClang drops from a GCC command the options clang rejects: clangd
// reports each as an error on every file, then ignores it anyway. Without
// clang installed the command stays as it is.
func forClang(dir, command string) string {
	args := strings.Fields(command)
	if len(args) == 0 || strings.Contains(args[0], "clang") {
		return command
	}
	clang, err := exec.LookPath("clang")
	if err != nil {
		return command
	}
	// -### only prints what clang would run; the rest is the command's shell text.
	cmd := exec.Command("sh", "-c", `"$0" -### `+strings.Join(args[1:], " "), clang)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	var drop []string
	for _, m := range rejected.FindAllStringSubmatch(string(out), -1) {
		drop = append(drop, m[1])
	}
	if len(drop) == 0 {
		return command
	}
	return strings.Join(slices.DeleteFunc(args, func(a string) bool { return slices.Contains(drop, a) }), " ")
}
