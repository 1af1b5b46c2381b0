package sim_test

import (
	"math/rand/v2"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/schedulertest"
	"github.com/shoalmesh/shoal/scheduler/sim"
)

// BenchmarkMixes replays each generated mix (8,000 pods) on the real
// 1,213-node trace cluster with every policy, seeds 42-51, and reports the
// unallocated GPU % at 100, 110 and 130 % arrived (the README's "other
// mixes" table). One iteration is enough:
//
//	go test -run '^$' -bench Mixes -benchtime 1x ./scheduler/sim
func BenchmarkMixes(b *testing.B) {
	nodes, _ := realTrace(b)
	seeds, err := sim.ParseSeeds("42-51")
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range schedulertest.Mixes() {
		pods := schedulertest.GenPods(rand.New(rand.NewPCG(4, 4)), m, 8000)
		var runs []mixRun
		for _, pol := range scheduler.Policies() {
			runs = append(runs, mixRun{string(pol), pol, scheduler.Config{}})
		}
		// FGD blind to the scarcity of constrained cards, for comparison.
		runs = append(runs, mixRun{"fgd-noscarcity", scheduler.FGD, scheduler.Config{ScarcityWeight: -1}})
		for _, run := range runs {
			b.Run(m.Name+"/"+run.name, func(b *testing.B) {
				var res sim.Result
				for b.Loop() {
					if res, err = sim.Replay(nodes, pods, sim.Config{Policy: run.pol, Seeds: seeds, Scheduler: run.sc}); err != nil {
						b.Fatal(err)
					}
				}
				for _, k := range []string{"100", "110", "130"} {
					b.ReportMetric(res.UnallocatedPct[k], "unalloc"+k+"_%")
				}
			})
		}
	}
}

type mixRun struct {
	name string
	pol  scheduler.Policy
	sc   scheduler.Config
}
