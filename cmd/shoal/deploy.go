package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/runtime/template"
)

func (a *app) deployCmd() *cobra.Command {
	var (
		sets     []string
		name     string
		file     string
		replicas int
	)
	cmd := &cobra.Command{
		Use:   "deploy [TEMPLATE]",
		Short: "Place a deployment from a template on the pool's GPUs",
		Long: `Render a template (a built-in one by name, or a file with -f) with --set
parameters and submit the deployment to the pool. The deployment's
coordinator, the member that rendezvous hashing picks for its name, places
its replicas: each chosen node admits the reservation against its own
ledger, so no card is promised twice.

Deploying a name that exists replaces its spec (e.g. its replica count).
A deployment that cannot fit now waits in the queue with its reason; one
that no node could ever hold is marked failed with the constraint and the
closest node. 'shoal ps' shows where each stands.

Replicas are placed (their GPUs reserved), not started yet.`,
		Example: `  shoal deploy vllm --set model=Qwen/Qwen2.5-7B-Instruct
  shoal deploy reference --set model=ref-tiny --name ref --replicas 2
  shoal deploy -f my-template.yaml --set size=7b`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return usagef("%s takes one template name, got %d arguments", cmd.CommandPath(), len(args))
			case len(args) == 1 && file != "":
				return usagef("give a template name or -f FILE, not both")
			case len(args) == 0 && file == "":
				return usagef("%s needs a template name (see 'shoal templates') or -f FILE", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			params, err := template.ParseSets(sets)
			if err != nil {
				return usagef("%w", err)
			}
			if replicas < 0 {
				return usagef("--replicas %d is negative", replicas)
			}
			req := node.DeployRequest{Name: name, Params: params, Replicas: replicas}
			if file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return usagef("template file: %w", err)
				}
				req.TemplateYAML = string(b)
			} else {
				req.Template = args[0]
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.Deploy(cmd.Context(), req)
			var ae *node.APIError
			if errors.As(err, &ae) && ae.StatusCode == http.StatusBadRequest {
				return usagef("%s", ae.Message)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(d)
			}
			r := d.Spec.Request
			_, err = fmt.Fprintf(a.stdout, "deployment %s submitted: %d replica(s) of %s; coordinator %s\nsee 'shoal ps'\n",
				d.ID, max(1, r.Replicas), shape(d), shortPeer(d.Owner))
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&sets, "set", nil, "template parameter as key=value (repeatable)")
	f.StringVar(&name, "name", "", "deployment name (default: the template's name)")
	f.StringVarP(&file, "file", "f", "", "template file instead of a built-in template")
	f.IntVar(&replicas, "replicas", 0, "replicas to place (default: the template's minReplicas, at least 1)")
	return cmd
}

// shape says what one replica takes: "1 GPU x 250 milli, 6.0 GiB".
func shape(d node.Deployment) string {
	r := d.Spec.Request
	if r.GPUs == 0 {
		return "CPU only"
	}
	s := fmt.Sprintf("%d GPU", r.GPUs)
	if r.MilliGPU > 0 {
		s += fmt.Sprintf(" x %d milli", r.MilliGPU)
	}
	if r.VRAM > 0 {
		s += ", " + bytesOrDash(r.VRAM)
	}
	if r.MinVRAM > 0 {
		s += ", min " + bytesOrDash(r.MinVRAM)
	}
	if r.Gang {
		s += ", gang"
	}
	return s
}

func (a *app) psCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ps",
		Short: "List deployments, their replicas and where they are placed",
		Long: `List every deployment of the pool, one row per placed replica (a deployment
without replicas gets one row). Columns: NAME, STATE (queued, placed,
failed), REPLICAS (placed/desired), REPLICA, NODE (peer ID prefix), GPUS
(UUID:milli), REASON (why queued or failed; the closest node in brackets),
COORDINATOR.

-o json prints the array the control API returns (GET /v1/deployments).`,
		Example: `  shoal ps
  shoal ps -o json | jq '.[] | {id, state: .status.state}'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if a.json() {
				raw, err := c.Get(cmd.Context(), "/v1/deployments")
				if err != nil {
					return err
				}
				return a.printRaw(raw)
			}
			ds, err := c.Deployments(cmd.Context())
			if err != nil {
				return err
			}
			return writePS(a.stdout, ds)
		},
	}
}

func writePS(w io.Writer, ds []node.Deployment) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tSTATE\tREPLICAS\tREPLICA\tNODE\tGPUS\tREASON\tCOORDINATOR")
	for _, d := range ds {
		st := d.Status
		state := string(st.State)
		if state == "" {
			state = "submitted"
		}
		count := fmt.Sprintf("%d/%d", len(st.Replicas), d.Spec.Desired())
		reason := st.Reason
		if reason != "" && st.Closest != "" {
			reason += " [closest " + shortPeer(st.Closest) + "]"
		}
		coord := shortPeer(st.Coordinator)
		if len(st.Replicas) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t%s\t%s\n", d.ID, state, count, dash(reason), coord)
			continue
		}
		for _, r := range st.Replicas {
			var nodes, gpus []string
			for _, s := range r.Slots {
				nodes = append(nodes, shortPeer(s.Node))
				for _, g := range s.GPUs {
					gpus = append(gpus, fmt.Sprintf("%s:%d", g.UUID, g.Milli))
				}
			}
			// Replica IDs are "<deployment>/<time>-<seq>-<coordinator>";
			// replicas placed in one step share the time, so show the rest.
			rid := r.ID
			if i := strings.LastIndex(rid, "/"); i >= 0 {
				rid = rid[i+1:]
			}
			if _, rest, ok := strings.Cut(rid, "-"); ok {
				rid = rest
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, state, count, rid,
				strings.Join(nodes, ","), dash(strings.Join(gpus, ",")), dash(reason), coord)
		}
	}
	return tw.Flush()
}

func (a *app) rmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a deployment and release its reservations",
		Long: `Remove a deployment from the pool: its coordinator releases every
reservation it holds on the nodes.`,
		Example: `  shoal rm vllm`,
		Args:    exactArgs(1, "a deployment name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.Remove(cmd.Context(), args[0])
			var ae *node.APIError
			if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
				return usagef("%s", ae.Message)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(d)
			}
			_, err = fmt.Fprintf(a.stdout, "deployment %s removed\n", d.ID)
			return err
		},
	}
}
