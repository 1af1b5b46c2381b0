package scheduler

import (
	"fmt"
	"sort"
	"strings"
)

// Policy names a ranking of the nodes that pass the filters.
type Policy string

// Policies. FGD is the default.
const (
	// FGD (fragmentation gradient descent) picks the placement that grows
	// the pool's fragmentation, measured against the learned workload, the
	// least; ties go to the best fit.
	FGD Policy = "fgd"
	// BestFit picks the node left with the least free CPU and GPU (each
	// normalised by the largest node, weighted half and half).
	BestFit Policy = "bestfit"
	// WorstFit (alias "spread") picks the node left with the most.
	WorstFit Policy = "worstfit"
	// FirstFit picks the first node, in snapshot order, that fits.
	FirstFit Policy = "firstfit"
	// Random picks a feasible node uniformly, from Config.Seed.
	Random Policy = "random"
)

// Policies lists the policy names in the order reports show them.
func Policies() []Policy { return []Policy{FGD, BestFit, WorstFit, FirstFit, Random} }

// ParsePolicy resolves a name (case-insensitive; "spread" is WorstFit,
// "" is FGD).
func ParsePolicy(name string) (Policy, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "fgd":
		return FGD, nil
	case "bestfit", "best-fit":
		return BestFit, nil
	case "worstfit", "worst-fit", "spread":
		return WorstFit, nil
	case "firstfit", "first-fit":
		return FirstFit, nil
	case "random":
		return Random, nil
	}
	names := make([]string, 0, 6)
	for _, p := range Policies() {
		names = append(names, string(p))
	}
	names = append(names, "spread")
	sort.Strings(names)
	return "", fmt.Errorf("%w %q (have %s)", ErrUnknownPolicy, name, strings.Join(names, ", "))
}
