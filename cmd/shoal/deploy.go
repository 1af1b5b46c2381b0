package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/market"
	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/runtime/template"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

func (a *app) deployCmd() *cobra.Command {
	var (
		sets     []string
		name     string
		file     string
		replicas int
		maxPrice string
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

Each node that holds a replica's reservation starts it (weights made local
first) and the gateway of every node serves it under the deployment's name.
A service whose template has minReplicas: 0 starts cold and runs a replica
only while requests come (see 'shoal scale').`,
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
			if maxPrice != "" {
				if _, err := market.ParseCredits(maxPrice); err != nil {
					return usagef("--max-price: %w", err)
				}
			}
			req := node.DeployRequest{Name: name, Params: params, Replicas: replicas, MaxPrice: maxPrice}
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
	f.StringVar(&maxPrice, "max-price", "", "the most to pay per GPU-hour, in credits (default: no limit); nodes asking more (--price) are not used")
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
without replicas gets one row). Columns: NAME, STATE (queued, failed, cold
for a deployment scaled to zero, else the replica's: placed, starting, ready,
backoff, failed, stopping), REPLICAS (placed/desired), REPLICA, NODE (peer ID
prefix), GPUS (UUID:milli), REASON (why queued or failed; the closest node in
brackets), COORDINATOR.

-o json prints the array the control API returns (GET /v1/deployments).`,
		Example: `  shoal ps
  shoal ps -o json | jq '.[] | {id, state: .status.state}'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.jsonOrTable(cmd.Context(), c, "/v1/deployments", func() error {
				ds, err := c.Deployments(cmd.Context())
				if err != nil {
					return err
				}
				return writePS(a.stdout, ds)
			})
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
		if len(st.Replicas) == 0 && d.Spec.ScaleToZero && st.State == coordinator.StatePlaced {
			state, count = "cold", fmt.Sprintf("0/%d", d.Spec.Request.Replicas)
		}
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
			rstate, rreason := state, reason
			for _, x := range d.Runs {
				if coordinator.ReplicaID(x.Reservation) == r.ID {
					rstate, rreason = x.State, x.Reason
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, rstate, count, rid,
				strings.Join(nodes, ","), dash(strings.Join(gpus, ",")), dash(rreason), coord)
		}
	}
	return tw.Flush()
}

func (a *app) scaleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "scale NAME N",
		Short: "Set how many replicas a deployment runs",
		Long: `Set a deployment's replica count: N >= 1 keeps N replicas running; 0 lets
it scale to zero (one replica while requests come, none after its template's
idleTimeout without traffic). Its coordinator places or releases replicas on
its next step.`,
		Example: `  shoal scale vllm 3
  shoal scale vllm 0`,
		Args: exactArgs(2, "a deployment name and a replica count"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 0 {
				return usagef("replica count %q: want a whole number, 0 or more", args[1])
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.Scale(cmd.Context(), args[0], n)
			var ae *node.APIError
			if errors.As(err, &ae) && (ae.StatusCode == http.StatusNotFound || ae.StatusCode == http.StatusBadRequest) {
				return usagef("%s", ae.Message)
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(d)
			}
			if n == 0 {
				_, err = fmt.Fprintf(a.stdout, "deployment %s scales to zero after %v without traffic\n", d.ID, d.Spec.IdleTimeout)
			} else {
				_, err = fmt.Fprintf(a.stdout, "deployment %s scaled to %d replica(s)\n", d.ID, n)
			}
			return err
		},
	}
}

func (a *app) logsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the output of a deployment's replicas on this node",
		Long: `Print what the replicas of a deployment that run on this node wrote to
stdout and stderr, each after a "== replica ID (STATE) ==" line. Replicas on
other nodes are named in a last line; run 'shoal logs' on those nodes.`,
		Example: `  shoal logs reference`,
		Args:    exactArgs(1, "a deployment name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			err = c.Logs(cmd.Context(), args[0], a.stdout)
			var ae *node.APIError
			if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
				return usagef("%s", ae.Message)
			}
			return err
		},
	}
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
