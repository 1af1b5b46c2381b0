package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/sim"
)

// simOutput is what `shoal sim -o json` prints: the replay's result and how
// long it took.
type simOutput struct {
	sim.Result
	WallSeconds float64 `json:"wall_seconds"`
	// NsPerPod is wall time over pods placed (all seeds, all workers).
	NsPerPod float64 `json:"ns_per_pod"`
}

func (a *app) simCmd() *cobra.Command {
	var (
		nodesPath, podsPath, policy, seeds string
		inflate                            float64
	)
	cmd := &cobra.Command{
		Use:   "sim --nodes NODES.csv --pods PODS.csv",
		Short: "Replay a GPU cluster trace through the placement policies",
		Long: `Replay a GPU cluster trace through the same placement code the pool uses, the
way the simulator of the FGD paper (Weng et al., USENIX ATC 2023) does: for
each seed, shuffle the pods, grow the list to --inflate x the cluster's GPU
capacity by sampling pods with replacement, place them one at a time (a pod
that fits nowhere is dropped; pods never leave), and after every pod record
arrived and allocated milli-GPU.

The files use the CSV layout of Alibaba's cluster-trace-gpu-v2023: nodes
sn,cpu_milli,memory_mib,gpu,model; pods name,cpu_milli,memory_mib,num_gpu,
gpu_milli[,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time].

Policies: fgd (default), bestfit, worstfit (alias spread), firstfit, random.
UNALLOC is 100 minus the allocated percent of GPU capacity when the arrived
workload reaches 100, 110 and 130 percent of it, mean over seeds.
The command needs no daemon.`,
		Example: `  shoal sim --nodes openb_node_list_gpu_node.csv --pods openb_pod_list_default.csv
  shoal sim --nodes nodes.csv --pods pods.csv --policy bestfit --seeds 42-51 -o json`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if nodesPath == "" || podsPath == "" {
				return usagef("--nodes and --pods are required")
			}
			if inflate <= 0 {
				return usagef("--inflate %g: want a positive multiple of the GPU capacity", inflate)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := scheduler.ParsePolicy(policy)
			if err != nil {
				return &usageError{err}
			}
			seedList, err := sim.ParseSeeds(seeds)
			if err != nil {
				return &usageError{err}
			}
			nodes, err := sim.ReadNodesFile(nodesPath)
			if err != nil {
				return err
			}
			pods, err := sim.ReadPodsFile(podsPath)
			if err != nil {
				return err
			}
			cfg := sim.Config{Policy: pol, Seeds: seedList, Inflate: inflate}
			if bar := newProgressBar(a.stderr); bar != nil {
				cfg.Progress = bar.update
				defer bar.finish()
			}
			start := time.Now()
			res, err := sim.Replay(nodes, pods, cfg)
			if err != nil {
				if errors.Is(err, sim.ErrConfig) {
					return &usageError{err}
				}
				return err
			}
			out := simOutput{Result: res, WallSeconds: time.Since(start).Seconds()}
			if res.PodsArrived > 0 {
				out.NsPerPod = out.WallSeconds * 1e9 / float64(res.PodsArrived)
			}
			if a.json() {
				return a.printJSON(out)
			}
			return writeSimTable(a.stdout, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&nodesPath, "nodes", "", "node list CSV (sn,cpu_milli,memory_mib,gpu,model)")
	f.StringVar(&podsPath, "pods", "", "pod list CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli,...)")
	f.StringVar(&policy, "policy", string(scheduler.FGD), "placement policy: fgd, bestfit, worstfit (spread), firstfit, random")
	f.StringVar(&seeds, "seeds", "42", `seeds to replay: "42-51", "1,2,3" or a mix`)
	f.Float64Var(&inflate, "inflate", sim.DefaultInflate, "grow the pod list to this multiple of the GPU capacity")
	cmd.MarkFlagFilename("nodes", "csv")
	cmd.MarkFlagFilename("pods", "csv")
	cmd.RegisterFlagCompletionFunc("policy", cobra.FixedCompletions(
		[]string{"fgd", "bestfit", "worstfit", "spread", "firstfit", "random"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// writeSimTable prints the summary and the curve every 10 percent.
func writeSimTable(w io.Writer, out simOutput) error {
	r := out.Result
	tw := newTable(w)
	seeds := make([]string, len(r.Seeds))
	for i, s := range r.Seeds {
		seeds[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(tw, "POLICY\t%s\n", r.Policy)
	fmt.Fprintf(tw, "SEEDS\t%s\n", strings.Join(seeds, ","))
	fmt.Fprintf(tw, "CLUSTER\t%d nodes, %d GPUs (%d milli-GPU)\n", r.Nodes, r.GPUs, r.GPUMilliCapacity)
	fmt.Fprintf(tw, "PODS\t%d arrived, %d failed (all seeds)\n", r.PodsArrived, r.PodsFailed)
	for _, k := range []string{"100", "110", "130"} {
		v, ok := r.UnallocatedPct[k]
		text := "-"
		if ok {
			text = fmt.Sprintf("%.2f%%", v)
		}
		fmt.Fprintf(tw, "UNALLOC@%s%%\t%s\n", k, text)
	}
	fmt.Fprintf(tw, "TIME\t%.2fs (%.0f µs per pod)\n", out.WallSeconds, out.NsPerPod/1e3)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "ARRIVED\tALLOCATED\tUNALLOCATED")
	for _, p := range r.Curve {
		if p.ArrivedPct%10 != 0 || p.ArrivedPct == 0 {
			continue
		}
		fmt.Fprintf(tw, "%d%%\t%.2f%%\t%.2f%%\n", p.ArrivedPct, p.AllocatedPct, 100-p.AllocatedPct)
	}
	return tw.Flush()
}

// progressBar draws the replay's progress on a terminal, on stderr.
type progressBar struct {
	w    io.Writer
	last int // last drawn per mille
}

// newProgressBar returns nil unless w is a terminal.
func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progressBar{w: w, last: -1}
}

func (b *progressBar) update(done, total int) {
	if total <= 0 {
		return
	}
	pm := done * 1000 / total
	if pm == b.last {
		return
	}
	b.last = pm
	const width = 40
	fill := pm * width / 1000
	fmt.Fprintf(b.w, "\r[%s%s] %5.1f%% %d/%d pods", strings.Repeat("#", fill), strings.Repeat(" ", width-fill), float64(pm)/10, done, total)
}

func (b *progressBar) finish() { fmt.Fprint(b.w, "\r\033[K") }
