package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// errUsage reports a command-line mistake; the flag package already printed why.
var errUsage = errors.New("usage")

// newFlagSet returns a flag set for one subcommand that writes its usage to
// the command's stderr.
func newFlagSet(env *cliEnv, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("ripple "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: ripple %s %s\n\nflags (each also settable as RIPPLE_<NAME>):\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// envName is the environment twin of a flag: --nats-url -> RIPPLE_NATS_URL.
func envName(flagName string) string {
	return "RIPPLE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line
// from its RIPPLE_* environment variable. It returns the positional arguments,
// which may also stand between flags.
func parseFlags(env *cliEnv, fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errUsage
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := env.getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("%w: %s=%q: %v", errUsage, envName(f.Name), v, err)
			}
		}
	})
	return positional, firstErr
}

// stringList is a repeatable string flag (--org a --org b); from the
// environment it takes a comma-separated list.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}
