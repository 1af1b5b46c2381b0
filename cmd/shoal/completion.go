package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/runtime/template"
)

// completeWait bounds how long a completion waits for the daemon: a shell
// must not hang on Tab when the daemon is slow or not running.
const completeWait = 2 * time.Second

// completionLong documents cobra's built-in `completion` command.
const completionLong = `Print a completion script for bash, zsh, fish or powershell.

Besides commands and flags, it completes names: templates for 'shoal deploy'
and 'shoal templates show'; deployments for 'shoal logs', 'scale' and 'rm';
models for 'shoal weights pull', 'path', 'pin', 'unpin' and 'rm'; members for
'shoal record'. Names other than templates come from this machine's daemon
(with --home if given) and are left out when it does not answer within 2s.

  bash:  source <(shoal completion bash)        # this shell
         shoal completion bash > /etc/bash_completion.d/shoal   # every shell
                                                 # (needs the bash-completion package)
  zsh:   shoal completion zsh > "${fpath[1]}/_shoal"   # then start a new shell
  fish:  shoal completion fish > ~/.config/fish/completions/shoal.fish`

// addCompletions enables cobra's `completion` command and completes the
// positional arguments that name things: templates, deployments, models and
// members. Commands are found by path, so this stays beside the flag
// definitions of each command without touching them.
func (a *app) addCompletions(root *cobra.Command) {
	// The completion command writes to the root's output as it is when the
	// command is made, so set it first.
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.CompletionOptions.DisableDefaultCmd = false
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		c.Long = completionLong
		// Runnable, so that a shell it does not know is a usage error
		// rather than its help with exit status 0.
		c.RunE = func(cmd *cobra.Command, args []string) error {
			return usagef("%s needs a shell: bash, zsh, fish or powershell", cmd.CommandPath())
		}
	}
	names := map[string]cobra.CompletionFunc{
		"deploy":         a.completeTemplates,
		"templates show": a.completeTemplates,
		"logs":           a.completeDeployments,
		"scale":          a.completeDeployments,
		"rm":             a.completeDeployments,
		"weights pull":   a.completeModels,
		"weights path":   a.completeModels,
		"weights verify": a.completeModels,
		"weights pin":    a.completeModels,
		"weights unpin":  a.completeModels,
		"weights rm":     a.completeModels,
		"record":         a.completeMembers,
	}
	for path, fn := range names {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c == root || c.ValidArgsFunction != nil {
			continue
		}
		c.ValidArgsFunction = firstArg(fn)
	}
}

// firstArg completes only the first positional argument (scale's count,
// for one, is not a name).
func firstArg(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return fn(cmd, args, toComplete)
	}
}

func (a *app) completeTemplates(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if f := cmd.Flags().Lookup("file"); f != nil && f.Changed {
		return nil, cobra.ShellCompDirectiveNoFileComp // -f FILE replaces the name
	}
	c, err := template.Builtin(version)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, t := range c.List() {
		if strings.HasPrefix(t.Name, toComplete) {
			out = append(out, cobra.CompletionWithDesc(t.Name, t.Description))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) completeDeployments(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.completeFromDaemon(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
		c, err := a.client()
		if err != nil {
			return nil, err
		}
		ds, err := c.Deployments(ctx)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, d := range ds {
			out = append(out, cobra.CompletionWithDesc(d.ID, string(d.Status.State)))
		}
		return out, nil
	})
}

func (a *app) completeModels(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.completeFromDaemon(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
		c, err := a.client()
		if err != nil {
			return nil, err
		}
		ms, err := c.WeightsList(ctx)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, m := range ms {
			if m.Name != "" {
				out = append(out, cobra.CompletionWithDesc(m.Name, string(m.State)))
			}
		}
		return out, nil
	})
}

func (a *app) completeMembers(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.completeFromDaemon(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
		c, err := a.client()
		if err != nil {
			return nil, err
		}
		ms, err := c.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		var out []cobra.Completion
		for _, m := range ms {
			out = append(out, cobra.CompletionWithDesc(m.PeerID, m.Name))
		}
		return out, nil
	})
}

// completeFromDaemon asks the daemon for names within completeWait and
// keeps those that start with toComplete; no answer means no names (never
// file names, which would mislead).
func (a *app) completeFromDaemon(cmd *cobra.Command, toComplete string, list func(context.Context) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completeWait)
	defer cancel()
	all, err := list(ctx)
	if err != nil {
		cobra.CompDebugln("shoal: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, c := range all {
		name, _, _ := strings.Cut(c, "\t")
		if strings.HasPrefix(name, toComplete) {
			out = append(out, c)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
