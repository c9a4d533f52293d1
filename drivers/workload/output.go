package workload

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// LastLines returns the last n non-blank lines of text, oldest first, each
// cut at MaxOutputLine bytes, with tabs and control characters (terminal
// escapes, above all) turned into spaces: the lines end up in a table on
// an operator's terminal. Drivers use it for OutputTailer.
func LastLines(text string, n int) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(strings.Map(printable, line))
		if line == "" {
			continue
		}
		out = append(out, cutLine(line))
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func printable(r rune) rune {
	if unicode.IsControl(r) || r == utf8.RuneError {
		return ' '
	}
	return r
}

func cutLine(line string) string {
	if len(line) <= MaxOutputLine {
		return line
	}
	cut := MaxOutputLine - len("...")
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return line[:cut] + "..."
}

// errorLine picks the line of output that most likely says why the
// workload exited: the last one that mentions an error, else the last one.
// Programs often log a farewell after the error ("See you next time!").
func errorLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.ToLower(lines[i])
		if strings.Contains(l, "error") || strings.Contains(l, "err=") || strings.Contains(l, "fatal") || strings.Contains(l, "panic") {
			return lines[i]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
