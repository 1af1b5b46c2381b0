package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/shoalmesh/shoal/scheduler"
)

// DefaultInflate grows the pod list to 1.3 x the pool's GPU capacity, as
// the FGD paper's replay does.
const DefaultInflate = 1.3

// ErrConfig: the replay's configuration or inputs cannot be replayed.
var ErrConfig = errors.New("sim: bad replay")

// ReportedPcts are the arrived-workload points (percent of GPU capacity) at
// which Result.UnallocatedPct is reported.
var ReportedPcts = []int{100, 110, 130}

// Config describes one replay.
type Config struct {
	// Policy places the pods ("" is the scheduler's default, FGD).
	Policy scheduler.Policy
	// Seeds: one replay per seed (shuffle, inflation and the random
	// policy's draws all derive from it). Empty is seed 42.
	Seeds []uint64
	// Inflate is the arrived GPU demand the pod list is grown (or cut) to,
	// as a multiple of the pool's GPU capacity; 0 is DefaultInflate.
	Inflate float64
	// Workers replays that many seeds at once; 0 is GOMAXPROCS. Results do
	// not depend on it.
	Workers int
	// Progress, when set, is told the pods placed so far over all seeds and
	// the total. Calls are serialised but come from the replay's goroutines.
	Progress func(done, total int)
	// Scheduler tunes the pools (its Policy and Seed are set per replay).
	Scheduler scheduler.Config
}

// Point is one point of the allocation curve.
type Point struct {
	ArrivedPct   int     `json:"arrived_pct"`
	AllocatedPct float64 `json:"allocated_pct"`
}

// SeedResult is one seed's replay.
type SeedResult struct {
	Seed           uint64             `json:"seed"`
	PodsArrived    int                `json:"pods_arrived"`
	PodsFailed     int                `json:"pods_failed"`
	UnallocatedPct map[string]float64 `json:"unallocated_pct"`
	curve          []float64          // allocated percent at arrived percent i
}

// Result is a replay over all seeds. Percentages are of the pool's GPU
// capacity; curves and unallocated percentages are means over seeds.
type Result struct {
	Policy           string   `json:"policy"`
	Seeds            []uint64 `json:"seeds"`
	Inflate          float64  `json:"inflate"`
	Nodes            int      `json:"nodes"`
	GPUs             int      `json:"gpus"`
	GPUMilliCapacity int64    `json:"gpu_milli_capacity"`
	// PodsArrived and PodsFailed are summed over seeds.
	PodsArrived int `json:"pods_arrived"`
	PodsFailed  int `json:"pods_failed"`
	// UnallocatedPct, keyed "100", "110", "130": 100 minus the allocated
	// percent when the arrived workload reaches that percent of capacity.
	UnallocatedPct map[string]float64 `json:"unallocated_pct"`
	// Curve maps arrived percent (0, 1, ...) to allocated percent, up to
	// the point every seed reached.
	Curve   []Point      `json:"curve"`
	PerSeed []SeedResult `json:"per_seed"`
}

// Replay places the pods on the nodes once per seed, the way the FGD
// paper's simulator does: shuffle the pods; grow the list to Inflate x the
// GPU capacity by sampling pods with replacement (stopping before the next
// would overflow), or drop pods from the end of the shuffled list while it
// is larger; place the pods one at a time (a pod that fits nowhere is
// dropped; pods never leave); after every pod record arrived and allocated
// GPU share. Every arriving pod is fed to the learned workload first.
func Replay(nodes []Node, pods []Pod, cfg Config) (Result, error) {
	if len(nodes) == 0 || len(pods) == 0 {
		return Result{}, fmt.Errorf("%w: no nodes or no pods", ErrConfig)
	}
	if cfg.Inflate == 0 {
		cfg.Inflate = DefaultInflate
	}
	if cfg.Inflate < 0 {
		return Result{}, fmt.Errorf("%w: inflate %g is negative", ErrConfig, cfg.Inflate)
	}
	if len(cfg.Seeds) == 0 {
		cfg.Seeds = []uint64{42}
	}
	policy, err := scheduler.ParsePolicy(string(cfg.Policy))
	if err != nil {
		return Result{}, err
	}
	snodes := SchedulerNodes(nodes)
	res := Result{Policy: string(policy), Seeds: cfg.Seeds, Inflate: cfg.Inflate, Nodes: len(nodes)}
	for _, n := range nodes {
		res.GPUs += n.GPUs
	}
	res.GPUMilliCapacity = int64(res.GPUs) * scheduler.MilliPerGPU
	if res.GPUMilliCapacity == 0 {
		return Result{}, fmt.Errorf("%w: the nodes have no GPUs", ErrConfig)
	}
	var demand int64
	for _, p := range pods {
		demand += p.GPUMilliDemand()
	}
	if demand == 0 {
		return Result{}, fmt.Errorf("%w: no pod asks for a GPU, nothing to measure", ErrConfig)
	}
	target := int64(cfg.Inflate * float64(res.GPUMilliCapacity))
	lists := make([][]Pod, len(cfg.Seeds))
	total := 0
	for i, seed := range cfg.Seeds {
		lists[i] = Arrivals(pods, target, seed)
		total += len(lists[i])
	}

	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		mu   sync.Mutex
		done int
		errs = make([]error, len(cfg.Seeds))
		out  = make([]SeedResult, len(cfg.Seeds))
		wg   sync.WaitGroup
		jobs = make(chan int)
	)
	progress := func(n int) {
		if cfg.Progress == nil {
			return
		}
		mu.Lock()
		done += n
		cfg.Progress(done, total)
		mu.Unlock()
	}
	for range min(workers, len(cfg.Seeds)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				sc := cfg.Scheduler
				sc.Policy, sc.Seed, sc.Workload = policy, cfg.Seeds[i], nil
				out[i], errs[i] = replayOne(snodes, lists[i], sc, res.GPUMilliCapacity, progress)
				out[i].Seed = cfg.Seeds[i]
			}
		}()
	}
	for i := range cfg.Seeds {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	res.PerSeed = out
	summarise(&res)
	return res, nil
}

// Arrivals is the pod list of one seed: pods shuffled, then grown to target
// GPU milli by sampling with replacement (stopping before the next sample
// would overflow it), or cut from the end while above it.
func Arrivals(pods []Pod, target int64, seed uint64) []Pod {
	rng := rand.New(rand.NewPCG(seed, 0x7ace))
	list := append([]Pod(nil), pods...)
	rng.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	var sum int64
	for _, p := range list {
		sum += p.GPUMilliDemand()
	}
	for sum > target && len(list) > 0 {
		sum -= list[len(list)-1].GPUMilliDemand()
		list = list[:len(list)-1]
	}
	for {
		p := pods[rng.IntN(len(pods))]
		if sum+p.GPUMilliDemand() > target {
			break
		}
		sum += p.GPUMilliDemand()
		list = append(list, p)
	}
	return list
}

func replayOne(nodes []scheduler.Node, pods []Pod, cfg scheduler.Config, capacity int64, progress func(int)) (SeedResult, error) {
	pool, err := scheduler.NewPool(nodes, cfg)
	if err != nil {
		return SeedResult{}, err
	}
	r := SeedResult{PodsArrived: len(pods)}
	var arrived, allocated int64
	var next int64 // next arrived percent to record
	const step = 256
	for i, p := range pods {
		req := p.Request()
		pool.Observe(req)
		arrived += p.GPUMilliDemand()
		plan, err := pool.Place(req)
		switch {
		case err == nil:
			if err := pool.Commit(plan); err != nil {
				return r, fmt.Errorf("sim: pod %s: %w", p.Name, err)
			}
			for _, rep := range plan.Replicas {
				for _, s := range rep.Slots {
					for _, g := range s.GPUs {
						allocated += int64(g.Milli)
					}
				}
			}
		case errors.Is(err, scheduler.ErrNoFit) || errors.Is(err, scheduler.ErrNeverFits):
			r.PodsFailed++
		default:
			return r, fmt.Errorf("sim: pod %s: %w", p.Name, err)
		}
		for next*capacity <= arrived*100 {
			r.curve = append(r.curve, 100*float64(allocated)/float64(capacity))
			next++
		}
		if (i+1)%step == 0 {
			progress(step)
		}
	}
	// The list stops just short of the inflated target: the last pod stands
	// for the arrived percent it rounds to.
	for next <= (arrived*100+capacity/2)/capacity {
		r.curve = append(r.curve, 100*float64(allocated)/float64(capacity))
		next++
	}
	progress(len(pods) % step)
	r.UnallocatedPct = map[string]float64{}
	for _, pct := range ReportedPcts {
		if pct < len(r.curve) {
			r.UnallocatedPct[strconv.Itoa(pct)] = 100 - r.curve[pct]
		}
	}
	return r, nil
}

// summarise averages the seeds' curves over the points all of them reached.
func summarise(res *Result) {
	n := -1
	for _, s := range res.PerSeed {
		res.PodsArrived += s.PodsArrived
		res.PodsFailed += s.PodsFailed
		if n < 0 || len(s.curve) < n {
			n = len(s.curve)
		}
	}
	res.Curve = make([]Point, max(n, 0))
	for i := range res.Curve {
		var sum float64
		for _, s := range res.PerSeed {
			sum += s.curve[i]
		}
		res.Curve[i] = Point{ArrivedPct: i, AllocatedPct: sum / float64(len(res.PerSeed))}
	}
	res.UnallocatedPct = map[string]float64{}
	for _, pct := range ReportedPcts {
		if pct < len(res.Curve) {
			res.UnallocatedPct[strconv.Itoa(pct)] = 100 - res.Curve[pct].AllocatedPct
		}
	}
}

// ParseSeeds reads "42-51", "1,2,3" or a mix ("1,5-7").
func ParseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("%w: seeds %q: empty item", ErrConfig, s)
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: seeds %q: %q is not a seed", ErrConfig, s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 64); err != nil {
				return nil, fmt.Errorf("%w: seeds %q: %q is not a seed", ErrConfig, s, hi)
			}
			if b < a {
				return nil, fmt.Errorf("%w: seeds %q: range %d-%d runs backwards", ErrConfig, s, a, b)
			}
			if b-a >= 10000 {
				return nil, fmt.Errorf("%w: seeds %q: range of %d seeds, at most 10000", ErrConfig, s, b-a+1)
			}
		}
		for v := a; ; v++ {
			out = append(out, v)
			if v == b {
				break
			}
		}
	}
	return out, nil
}
