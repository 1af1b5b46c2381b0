package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/runtime/template"
)

// templateSummary is one row of `shoal templates -o json`.
type templateSummary struct {
	Name        string                `json:"name"`
	Kind        template.WorkloadKind `json:"kind"`
	Description string                `json:"description"`
	Parameters  []template.Param      `json:"parameters"`
}

func (a *app) templatesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "templates",
		Short: "List the built-in deployment templates",
		Long: `List the templates built into this binary, which 'shoal deploy NAME' starts
from. Columns: NAME, KIND (service, job or gang), PARAMETERS (required ones
marked with *), DESCRIPTION.

'shoal templates show NAME' prints one template's YAML. Neither needs the
daemon.`,
		Example: `  shoal templates
  shoal templates show vllm
  shoal templates -o json | jq '.[].name'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := template.Builtin(version)
			if err != nil {
				return err
			}
			var rows []templateSummary
			for _, t := range c.List() {
				rows = append(rows, templateSummary{Name: t.Name, Kind: t.Kind(), Description: t.Description, Parameters: t.Parameters})
			}
			if a.json() {
				return a.printJSON(rows)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tKIND\tPARAMETERS\tDESCRIPTION")
			for _, r := range rows {
				var ps []string
				for _, p := range r.Parameters {
					n := p.Name
					if p.Required {
						n += "*"
					}
					ps = append(ps, n)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Kind, dash(strings.Join(ps, ",")), r.Description)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(a.templatesShowCmd())
	return cmd
}

func (a *app) templatesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Print a built-in template's YAML",
		Long: `Print the YAML of one built-in template, as written. With -o json, print its
name, kind, description and parameters instead.`,
		Example: `  shoal templates show reference
  shoal templates show llama-cpp-split > my-split.yaml`,
		Args: exactArgs(1, "a template name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := template.Builtin(version)
			if err != nil {
				return err
			}
			t, err := c.Get(args[0])
			if errors.Is(err, template.ErrUnknownTemplate) {
				return usagef("%w", err)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(templateSummary{Name: t.Name, Kind: t.Kind(), Description: t.Description, Parameters: t.Parameters})
			}
			_, err = a.stdout.Write(t.Source())
			return err
		},
	}
}
