package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/egressd/egressd/internal/buildinfo"
)

// Exit codes.
const (
	exitOK    = 0 // success (explain: whatever the verdict)
	exitFail  = 1 // invalid input: invalid policies, unreadable files, unknown workloads
	exitUsage = 2 // bad command line
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"validate", "check policy files and print every error with its file, object and field", runValidate},
		{"explain", "explain the verdict on one connection or DNS lookup", runExplain},
		{"matrix", "print the reachability matrix of every pod to every pod", runMatrix},
		{"convert", "convert Calico policies into egressd policies", runConvert},
		{"status", "show the live state of a running agent (sets, blocked lookups, sync)", runStatus},
		{"version", "print the version", runVersion},
		{"help", "print help on a command", runHelp},
	}
}

// run is the whole program: it parses args (without the program name), writes
// to stdout and stderr and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "-version", "--version":
		return runVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "egressctl: unknown command %q\nRun 'egressctl help' for usage.\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `egressctl is the offline CLI of egressd, a DNS-aware egress firewall.

Usage:
  egressctl <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'egressctl <command> -h' for the flags of a command.
Exit codes: 0 success (explain: whatever the verdict), 1 invalid input
(invalid policies, unreadable files, unknown workloads), 2 usage error.
`)
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		usage(stdout)
		return exitOK
	case 1:
		for _, c := range commands() {
			if c.name == args[0] && c.name != "help" {
				return c.run([]string{"-h"}, stdout, stderr)
			}
		}
		if args[0] == "help" {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "egressctl help: unknown command %q\n", args[0])
		return exitUsage
	}
	fmt.Fprintln(stderr, "egressctl help: want at most one command")
	return exitUsage
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", "Print the version of egressctl.")
	if code, done := parse(fs, args, stdout, stderr); done {
		return code
	}
	fmt.Fprintf(stdout, "egressctl %s\n", versionString())
	return exitOK
}

func versionString() string { return buildinfo.Version(version) }

// flagSet is a subcommand's flags with its help text.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	help     string
}

func newFlagSet(name, synopsis, help string) *flagSet {
	fs := flag.NewFlagSet("egressctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagSet{FlagSet: fs, synopsis: synopsis, help: help}
}

func (fs *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage:\n  %s %s\n\n%s\n", fs.Name(), fs.synopsis, strings.TrimSpace(fs.help))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// parse parses args; done is true when the command must return code at once
// (help printed, or a usage error reported).
func parse(fs *flagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.usage(stdout)
		return exitOK, true
	case err != nil:
		return usageError(fs, stderr, "%v", err), true
	}
	return 0, false
}

// usageError reports a bad command line and returns exitUsage.
func usageError(fs *flagSet, stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s\nRun '%s -h' for usage.\n", fs.Name(), fmt.Sprintf(format, a...), fs.Name())
	return exitUsage
}

// failf reports invalid input and returns exitFail.
func failf(fs *flagSet, stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	return exitFail
}
