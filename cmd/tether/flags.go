package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// envPrefix starts the environment variable of every flag.
const envPrefix = "TETHER_"

// envName returns the environment variable a flag reads:
// --redis-url → TETHER_REDIS_URL.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagSet is a flag.FlagSet whose every flag also reads TETHER_<FLAG> from
// the environment. A flag given on the command line beats the environment,
// which beats the default; an empty variable counts as unset.
type flagSet struct {
	fs       *flag.FlagSet
	cmd      string // "serve", "token", …
	synopsis string // the usage line after "tether "
	about    string // what the command does, one paragraph
	getenv   func(string) string
	help     io.Writer // where --help prints the usage
}

// newFlagSet returns an empty flagSet for a command. synopsis is the usage
// line without "tether ", about a short description; --help prints both and
// the flags to help.
func newFlagSet(cmd, synopsis, about string, getenv func(string) string, help io.Writer) *flagSet {
	fs := flag.NewFlagSet("tether "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors to its caller
	fs.Usage = func() {}
	return &flagSet{fs: fs, cmd: cmd, synopsis: synopsis, about: about, getenv: getenv, help: help}
}

// String defines a string flag.
func (f *flagSet) String(p *string, name, def, usage string) {
	f.fs.StringVar(p, name, def, usage)
}

// Bool defines a boolean flag.
func (f *flagSet) Bool(p *bool, name string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, usage)
}

// Int defines an integer flag.
func (f *flagSet) Int(p *int, name string, def int, usage string) {
	*p = def
	f.fs.Var((*intValue)(p), name, usage)
}

// Duration defines a duration flag ("25s", "168h").
func (f *flagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.fs.Var((*durationValue)(p), name, usage)
}

// Strings defines a list flag: it may be repeated (--group a --group b),
// and each value may be a comma-separated list (--group a,b). Empty items
// are dropped. The first value given replaces the default.
func (f *flagSet) Strings(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	f.fs.Var(&listValue{p: p}, name, usage)
}

// parse parses args, then applies the environment to every flag not given
// on the command line. On --help or -h it prints the usage to f.help and
// returns flag.ErrHelp. Other errors are returned unprinted.
func (f *flagSet) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage(f.help)
		}
		return err
	}
	given := make(map[string]bool)
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var errs []error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if given[fl.Name] {
			return
		}
		env := envName(fl.Name)
		v := f.getenv(env)
		if v == "" {
			return
		}
		if err := fl.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s (--%s): %v", env, fl.Name, err))
		}
	})
	return errors.Join(errs...)
}

// args returns the arguments left after the flags.
func (f *flagSet) args() []string { return f.fs.Args() }

// parseInterspersed parses flags given before, between and after the
// arguments (tether doctor goroutines dump.txt --json; tether check ws://…
// --conns 10), then the environment once for the flags not given, and
// returns the arguments. Everything after "--" is an argument.
func (f *flagSet) parseInterspersed(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.usage(f.help)
			}
			return nil, err
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, f.parse(nil)
}

// noArgs returns an error when arguments are left after the flags.
func (f *flagSet) noArgs() error {
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags start with --)", f.fs.Arg(0))
	}
	return nil
}

// usage prints the synopsis, the description and every flag with its
// default and environment variable.
func (f *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: tether %s\n\n", f.synopsis)
	if f.about != "" {
		fmt.Fprintf(w, "%s\n\n", f.about)
	}
	fmt.Fprintf(w, "Flags (each also read from the environment variable shown; the command line wins):\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	f.fs.VisitAll(func(fl *flag.Flag) {
		arg, text := flag.UnquoteUsage(fl)
		if _, ok := fl.Value.(*listValue); ok {
			arg += "[,…]"
		}
		if _, ok := fl.Value.(*durationValue); ok && arg == "value" {
			arg = "duration"
		}
		if _, ok := fl.Value.(*intValue); ok && arg == "value" {
			arg = "n"
		}
		if fl.DefValue != "" && fl.DefValue != "false" {
			text += fmt.Sprintf(" (default %s)", fl.DefValue)
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\t$%s\n", fl.Name, arg, text, envName(fl.Name))
	})
	tw.Flush()
}

// intValue is an int flag with readable errors.
type intValue int

// String returns the value in decimal.
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

// Set parses a whole number, ignoring surrounding spaces.
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = intValue(n)
	return nil
}

// durationValue is a time.Duration flag with readable errors.
type durationValue time.Duration

// String returns the duration as formatDuration writes it.
func (v *durationValue) String() string { return formatDuration(time.Duration(*v)) }

// formatDuration is time.Duration.String without zero minutes and
// seconds: 24h rather than 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Set parses a duration such as 25s or 24h, ignoring surrounding spaces.
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration (examples: 500ms, 25s, 24h)", s)
	}
	*v = durationValue(d)
	return nil
}

// listValue is a repeatable, comma-separated list flag.
type listValue struct {
	p     *[]string
	given bool // a value was set; the default is gone
}

// String returns the items joined by commas.
func (v *listValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

// Set appends the non-blank comma-separated items of s; the first Set
// replaces the default.
func (v *listValue) Set(s string) error {
	if !v.given {
		*v.p = nil
		v.given = true
	}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v.p = append(*v.p, item)
		}
	}
	return nil
}

// writeReport writes a command's report to w: indented JSON when asJSON
// (for programs), else its text form (for people).
func writeReport(w io.Writer, asJSON bool, rep any, text func(io.Writer) error) error {
	if !asJSON {
		return text(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
