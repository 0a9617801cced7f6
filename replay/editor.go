package replay

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
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
// write it, or nil if the module has none.
func (g *Graph) CompileCommands() []byte {
	var cmds []compileCommand
	for _, o := range g.Objects {
		m := compileLine.FindStringSubmatch(o.Cmd)
		if m == nil || !strings.HasSuffix(o.Target, ".o") {
			continue
		}
		prefix := strings.NewReplacer(`\#`, "#", "$(pound)", "#").Replace(m[1])
		cmds = append(cmds, compileCommand{Directory: g.Objtree, File: g.abs(m[2]), Command: prefix + m[2]})
	}
	if len(cmds) == 0 {
		return nil
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].File < cmds[j].File })
	out, _ := json.MarshalIndent(cmds, "", "  ")
	return append(out, '\n')
}

// WriteIfChanged writes data to path unless it already holds exactly that,
// so an editor watching the file only reloads it when it changed.
func WriteIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
