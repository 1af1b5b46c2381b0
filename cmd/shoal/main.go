// Command shoal runs and drives a shoal node: a peer-to-peer pool of
// volunteer GPUs. Every machine runs the same binary: `shoal up` starts a
// pool, `shoal join TOKEN` adds a machine, the other commands talk to the
// local daemon over its control socket.
//
// This package parses flags and formats output; the behaviour lives in
// package node.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// app is one invocation of the CLI.
type app struct {
	args   []string // the command line, without the program name
	stdout io.Writer
	stderr io.Writer

	home   string // --home
	output string // -o, --output

	// started is set once flags and arguments were accepted and a command
	// began to run; an error before that is a usage error.
	started bool
}

// run executes the CLI and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{args: args, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if !a.started || errors.As(err, &ue) {
		fmt.Fprintf(stderr, "shoal: %v\n", err)
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(stderr, "shoal: %v\n", err)
	return exitError
}

// usageError marks an error in how the command was called (a bad argument
// or flag value): exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}
