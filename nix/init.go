package nix

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"
)

//go:embed template
var templates embed.FS

// InitOptions configures Init.
type InitOptions struct {
	Name string // module name; default: the base name of the directory. Made [a-z0-9_].
	// AuthorizedKey returns the SSH public key that may log in to the VM as
	// root. Init calls it only once it knows it will write the project, so a
	// refused Init leaves no key behind either.
	AuthorizedKey func() (string, error)
	Force         bool // overwrite existing files (an existing .gitignore is merged, never overwritten)
}

// InputError is init refusing its input: what is wrong and how to fix it.
type InputError struct{ Msg, Fix string }

func (e *InputError) Error() string { return e.Msg + ": " + e.Fix }

// Hint says how to fix the input.
func (e *InputError) Hint() string { return e.Fix }

// Init writes a new kwatch project into dir: a flake with a NixOS VM
// (configuration.nix), the module's derivation (module.nix) and a Rust hello
// module in src/. It returns the files written, relative to dir. Without
// opts.Force it writes nothing if any of them exists. Its lines are added
// to an existing .gitignore, whose own lines stay.
func Init(dir string, opts InitOptions) (written []string, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(dir)
	}
	name = moduleName(name)
	if name == "" || name[0] < 'a' || name[0] > 'z' {
		return nil, &InputError{Msg: fmt.Sprintf("module name %q does not start with a letter", name), Fix: "pass --name with a name that does"}
	}
	if !opts.Force {
		var exist []string
		for _, t := range targets(name) {
			if _, err := os.Lstat(filepath.Join(dir, t.path)); err == nil && t.path != ".gitignore" {
				exist = append(exist, t.path)
			}
		}
		if len(exist) > 0 {
			return nil, &InputError{Msg: strings.Join(exist, ", ") + " exists", Fix: "pass --force to overwrite (an existing .gitignore is merged, never overwritten)"}
		}
	}
	key := ""
	if opts.AuthorizedKey != nil {
		if key, err = opts.AuthorizedKey(); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(key, "\r\n") {
		return nil, errors.New("the authorized SSH key must be one line")
	}
	files, err := render(templateData{Name: name, Type: typeName(name), AuthorizedKey: key})
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if f.path == ".gitignore" {
			old, err := os.ReadFile(p)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return written, fmt.Errorf("reading %s: %w", f.path, err)
			}
			if f.content = mergeLines(old, f.content); bytes.Equal(f.content, old) {
				continue
			}
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return written, fmt.Errorf("creating the directory for %s: %w", f.path, err)
		}
		if err := os.WriteFile(p, f.content, 0o644); err != nil {
			return written, fmt.Errorf("writing %s: %w", f.path, err)
		}
		written = append(written, f.path)
	}
	return written, nil
}

// mergeLines appends to old the lines of add that old lacks.
func mergeLines(old, add []byte) []byte {
	if len(old) == 0 {
		return add
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		have[l] = true
	}
	out := bytes.Clone(old)
	if out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, l := range strings.SplitAfter(string(add), "\n") {
		if line := strings.TrimSuffix(l, "\n"); line != "" && !have[line] {
			out = append(out, line+"\n"...)
			have[line] = true
		}
	}
	return out
}

type templateData struct {
	Name          string // module name
	Type          string // the module's Rust type
	AuthorizedKey string
}

type file struct {
	path    string
	content []byte
}

// targets are the templates and the files they become, in the order Init
// reports them.
func targets(name string) []struct{ tmpl, path string } {
	return []struct{ tmpl, path string }{
		{"flake.nix", "flake.nix"},
		{"configuration.nix", "configuration.nix"},
		{"module.nix", "module.nix"},
		{"src/Kbuild", "src/Kbuild"},
		{"src/Makefile", "src/Makefile"},
		{"src/module.rs", "src/" + name + ".rs"},
		{"gitignore", ".gitignore"},
	}
}

// render fills in the templates.
func render(data templateData) ([]file, error) {
	funcs := template.FuncMap{"nixString": nixString}
	var files []file
	for _, t := range targets(data.Name) {
		text, err := fs.ReadFile(templates, path.Join("template", t.tmpl))
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(t.tmpl).Funcs(funcs).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("parsing template %s: %w", t.tmpl, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("rendering template %s: %w", t.tmpl, err)
		}
		files = append(files, file{t.path, buf.Bytes()})
	}
	return files, nil
}

// moduleName lower-cases s and turns everything but [a-z0-9_] into '_',
// as kernel module names (and Rust identifiers) need.
func moduleName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, s)
}

// typeName makes the Rust type name for a module: hello_world → HelloWorld.
func typeName(name string) string {
	var b strings.Builder
	for _, part := range strings.Split(name, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`)
	return `"` + r.Replace(s) + `"`
}
