package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node"
)

const (
	outputTable = "table"
	outputJSON  = "json"
)

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "shoal",
		Short: "Pool GPUs of many machines into one peer-to-peer cluster",
		Long: `shoal turns GPUs that live on different machines, owned by different people,
into one pool. There is no central server: every machine runs this same binary,
and the pool is whatever set of machines hold its key.

Start a pool on one machine with 'shoal up'; it prints a 'shoal join TOKEN'
command to run on every other machine. The other commands talk to the daemon
of this machine through the control socket in its home directory.

Home directory: --home, else $SHOAL_HOME, else $XDG_DATA_HOME/shoal, else
~/.local/share/shoal.

Exit status: 0 success, 1 error, 2 usage error (bad flag, argument or token).`,
		Example: `  # machine A: start a pool, in the background
  shoal up --detach

  # machine B: join it with the command 'shoal up' printed
  shoal join shoal1.7Kq...

  # anywhere in the pool
  shoal nodes`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != outputTable && a.output != outputJSON {
				return usagef("--output %q is not a format; use table or json", a.output)
			}
			a.started = true
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.home, "home", "", "home directory of the node (default $SHOAL_HOME, $XDG_DATA_HOME/shoal or ~/.local/share/shoal)")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table or json")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputTable, outputJSON}, cobra.ShellCompDirectiveNoFileComp))
	root.MarkPersistentFlagDirname("home")

	root.AddCommand(
		a.upCmd(),
		a.joinCmd(),
		a.tokenCmd(),
		a.nodesCmd(),
		a.statusCmd(),
		a.recordCmd(),
		a.leaveCmd(),
		a.resetIdentityCmd(),
		a.versionCmd(),
		a.templatesCmd(),
		a.simCmd(),
		a.weightsCmd(),
		a.deployCmd(),
		a.psCmd(),
		a.rmCmd(),
		a.scaleCmd(),
		a.logsCmd(),
		a.creditsCmd(),
		a.serviceCmd(),
	)
	a.addCompletions(root)
	return root
}

// resolveHome applies --home and the environment.
func (a *app) resolveHome() (string, error) {
	return node.ResolveHome(a.home)
}

// client returns a control API client for the home.
func (a *app) client() (*node.Client, error) {
	home, err := a.resolveHome()
	if err != nil {
		return nil, err
	}
	return node.NewClient(home), nil
}

func (a *app) json() bool { return a.output == outputJSON }

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}

// printRaw writes JSON the daemon sent, unchanged but for a final newline.
func (a *app) printRaw(raw json.RawMessage) error {
	b := []byte(raw)
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	_, err := a.stdout.Write(b)
	return err
}

// jsonOrTable is the shape of the read-only listing commands: with -o json
// it prints the control API's answer to GET path as it is (so scripts see
// every field); otherwise it calls table, which fetches and formats.
func (a *app) jsonOrTable(ctx context.Context, c *node.Client, path string, table func() error) error {
	if !a.json() {
		return table()
	}
	raw, err := c.Get(ctx, path)
	if err != nil {
		return err
	}
	return a.printRaw(raw)
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// exactArgs wants n positional arguments, named in the message.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s, got %d arguments", cmd.CommandPath(), names, len(args))
		}
		return nil
	}
}
