package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

const completionUsage = `usage: kwatch completion bash|zsh|fish
prints the completion script for the shell:
  bash: source <(kwatch completion bash)       (or save it in /etc/bash_completion.d/kwatch)
  zsh:  source <(kwatch completion zsh)        (or save it as _kwatch in a dir on $fpath)
  fish: kwatch completion fish > ~/.config/fish/completions/kwatch.fish
`

// runCompletion prints a completion script made from the subcommands'
// own flag definitions, so it lists exactly the flags kwatch takes.
func runCompletion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("kwatch completion")
	pos, err := parseFlags(fs, args, stderr, completionUsage)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("kwatch completion bash, zsh or fish", "kwatch completion needs one shell")
	}
	cmds := completionCommands()
	switch pos[0] {
	case "bash":
		_, err = io.WriteString(stdout, bashCompletion(cmds))
	case "zsh":
		_, err = io.WriteString(stdout, zshCompletion(cmds))
	case "fish":
		_, err = io.WriteString(stdout, fishCompletion(cmds))
	default:
		return usagef("kwatch completion bash, zsh or fish", "no completion for the shell %q", pos[0])
	}
	return err
}

// compFlag is one flag as the completion scripts see it.
type compFlag struct {
	name, help string
	kind       string   // "bool", "dir", "file", "choice" or "value"
	choices    []string // for "choice"
}

// compCommand is a subcommand ("" for `kwatch [DIR]`) with its flags.
type compCommand struct {
	name, help string
	flags      []compFlag
	words      []string // its first argument is one of these
	dirs       bool     // its arguments are directories
}

// choicesPrefix is a usage that starts with the flag's values: "qemu|nix|ssh: ...".
var choicesPrefix = regexp.MustCompile(`^[a-z0-9-]+(\|[a-z0-9-]+)+`)

func compFlags(define func(*options, *flag.FlagSet)) []compFlag {
	if define == nil {
		return nil
	}
	fs := newFlagSet("")
	define(&options{}, fs)
	var flags []compFlag
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		c := compFlag{name: f.Name, help: help, kind: "value"}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			c.kind = "bool"
		}
		switch arg {
		case "DIR":
			c.kind = "dir"
		case "FILE":
			c.kind = "file"
		}
		if m := choicesPrefix.FindString(f.Usage); m != "" {
			c.kind, c.choices = "choice", strings.Split(m, "|")
		}
		flags = append(flags, c)
	})
	return flags
}

func completionCommands() []compCommand {
	cmds := []compCommand{{flags: compFlags((*options).watchFlags), dirs: true}}
	for _, c := range subcommands() {
		line, _, _ := strings.Cut(c.usage, "\n")
		_, help, _ := strings.Cut(line, "\t")
		cmds = append(cmds, compCommand{name: c.name, help: help, flags: compFlags(c.flags), words: c.args, dirs: c.dirArg})
	}
	return cmds
}

func names(cmds []compCommand) string {
	var n []string
	for _, c := range cmds[1:] {
		n = append(n, c.name)
	}
	return strings.Join(n, " ")
}

func bashCompletion(cmds []compCommand) string {
	var b strings.Builder
	b.WriteString(`# bash completion for kwatch (kwatch completion bash): source it, or save it in /etc/bash_completion.d/kwatch
_kwatch() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local sub="" first=1
	case ${COMP_WORDS[1]} in
	` + strings.ReplaceAll(names(cmds), " ", "|") + `) sub=${COMP_WORDS[1]}; first=2 ;;
	esac
	local flags words="" dirs=""
	case $sub in
`)
	// What a flag's value completes to is the same in every subcommand.
	byKind := map[string][]string{}
	choices := map[string]string{}
	for _, c := range cmds {
		var fl []string
		for _, f := range c.flags {
			fl = append(fl, "--"+f.name)
			key := "-" + f.name + "|--" + f.name
			switch f.kind {
			case "choice":
				choices[key] = strings.Join(f.choices, " ")
			case "bool":
			default:
				byKind[f.kind] = append(byKind[f.kind], key)
			}
		}
		w := strings.Join(c.words, " ")
		if c.name == "" {
			w = names(cmds)
		}
		fmt.Fprintf(&b, "\t%q) flags=%q words=%q dirs=%v ;;\n", c.name, strings.Join(fl, " "), w, boolWord(c.dirs))
	}
	b.WriteString("\tesac\n\tcase $prev in\n")
	for _, kind := range []string{"dir", "file", "value"} {
		keys := dedupe(byKind[kind])
		if len(keys) == 0 {
			continue
		}
		action := map[string]string{
			"dir":   `compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")); return`,
			"file":  `compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return`,
			"value": `COMPREPLY=(); return`,
		}[kind]
		fmt.Fprintf(&b, "\t%s) %s ;;\n", strings.Join(keys, "|"), action)
	}
	var keys []string
	for k := range choices {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;\n", k, choices[k])
	}
	b.WriteString(`	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	elif [[ -n $words && $COMP_CWORD -eq $first ]]; then
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
		[[ -n $dirs ]] && COMPREPLY+=($(compgen -d -- "$cur"))
	elif [[ -n $dirs ]]; then
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -d -- "$cur"))
	fi
}
complete -F _kwatch kwatch
`)
	return b.String()
}

func boolWord(b bool) string {
	if b {
		return "1"
	}
	return ""
}

func dedupe(s []string) []string {
	sort.Strings(s)
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// zshQuote makes s safe in a zsh _arguments description: no brackets,
// colons or single quotes.
func zshQuote(s string) string {
	return strings.NewReplacer("[", "(", "]", ")", ":", " -", "'", "", "\\", "").Replace(s)
}

func zshCompletion(cmds []compCommand) string {
	var b strings.Builder
	b.WriteString(`#compdef kwatch
# zsh completion for kwatch (kwatch completion zsh): source it, or save it as _kwatch in a dir on $fpath
_kwatch() {
	local -a subcommands
	subcommands=(
`)
	for _, c := range cmds[1:] {
		fmt.Fprintf(&b, "\t\t'%s:%s'\n", c.name, zshQuote(c.help))
	}
	b.WriteString("\t)\n\tcase $words[2] in\n")
	for _, c := range cmds {
		var specs []string
		for _, f := range c.flags {
			spec := fmt.Sprintf("'--%s[%s]", f.name, zshQuote(f.help))
			switch f.kind {
			case "dir":
				spec += ":dir:_files -/"
			case "file":
				spec += ":file:_files"
			case "choice":
				spec += ":" + f.name + ":(" + strings.Join(f.choices, " ") + ")"
			case "value":
				spec += ":" + f.name + ": "
			}
			specs = append(specs, spec+"'")
		}
		switch {
		case c.name == "":
			specs = append(specs, "'1: :->first'", "'*:dir:_files -/'")
		case len(c.words) > 0:
			specs = append(specs, "'1:"+c.name+":("+strings.Join(c.words, " ")+")'")
			if c.name == "vm" {
				specs = append(specs, "'*:command: '")
			}
		case c.dirs:
			specs = append(specs, "'*:dir:_files -/'")
		}
		pattern := c.name
		if c.name == "" {
			pattern = "*"
			b.WriteString("\t*)\n\t\tlocal state\n\t\t_arguments -s \\\n")
		} else {
			fmt.Fprintf(&b, "\t%s)\n\t\tshift words; (( CURRENT-- ))\n\t\t_arguments -s \\\n", pattern)
		}
		for i, s := range specs {
			sep := " \\\n"
			if i == len(specs)-1 {
				sep = "\n"
			}
			fmt.Fprintf(&b, "\t\t\t%s%s", s, sep)
		}
		if c.name == "" {
			b.WriteString("\t\t[[ $state == first ]] && { _describe subcommand subcommands; _files -/ }\n")
		}
		b.WriteString("\t\t;;\n")
	}
	// The watch command's case (*) must come last.
	out := b.String()
	start := strings.Index(out, "\t*)\n")
	end := strings.Index(out[start:], "\t\t;;\n") + start + len("\t\t;;\n")
	out = out[:start] + out[end:] + out[start:end]
	return out + `	esac
}
if [[ $funcstack[1] == _kwatch ]]; then
	_kwatch "$@"
else
	compdef _kwatch kwatch
fi
`
}

// fishQuote makes s one fish single-quoted string.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func fishCompletion(cmds []compCommand) string {
	var b strings.Builder
	all := names(cmds)
	b.WriteString("# fish completion for kwatch (kwatch completion fish > ~/.config/fish/completions/kwatch.fish)\ncomplete -c kwatch -f\n")
	for _, c := range cmds[1:] {
		fmt.Fprintf(&b, "complete -c kwatch -n __fish_use_subcommand -a %s -d %s\n", c.name, fishQuote(c.help))
	}
	b.WriteString("complete -c kwatch -n __fish_use_subcommand -a '(__fish_complete_directories)'\n")
	for _, c := range cmds {
		cond := fmt.Sprintf("'__fish_seen_subcommand_from %s'", c.name)
		if c.name == "" {
			cond = fmt.Sprintf("'not __fish_seen_subcommand_from %s'", all)
		}
		for _, f := range c.flags {
			fmt.Fprintf(&b, "complete -c kwatch -n %s -l %s -d %s", cond, f.name, fishQuote(f.help))
			switch f.kind {
			case "dir":
				b.WriteString(" -r -a '(__fish_complete_directories)'")
			case "file":
				b.WriteString(" -r -F")
			case "choice":
				fmt.Fprintf(&b, " -x -a %s", fishQuote(strings.Join(f.choices, " ")))
			case "value":
				b.WriteString(" -x")
			}
			b.WriteString("\n")
		}
		if c.name == "" {
			continue
		}
		if len(c.words) > 0 {
			words := strings.Join(c.words, " ")
			fmt.Fprintf(&b, "complete -c kwatch -n '__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s' -a %s\n", c.name, words, fishQuote(words))
		}
		if c.dirs {
			fmt.Fprintf(&b, "complete -c kwatch -n %s -a '(__fish_complete_directories)'\n", cond)
		}
	}
	return b.String()
}
