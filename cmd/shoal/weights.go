package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node"
	"github.com/shoalmesh/shoal/weightcache"
)

func (a *app) weightsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "weights",
		Short: "Import, share and fetch model weights through the pool",
		Long: `Model weights live in each node's weight cache (HOME/weights), addressed by a
content ID that pins every byte. A model imported or downloaded on one node is
fetched by the others from every member that holds it, chunk by chunk, each
chunk verified against the ID before it is written.

Names map to IDs: a name given at import travels in the node's record, so
'pull NAME' works on any member. Each node announces the models it holds
complete, for placement near the weights.

The daemon's cache is limited by 'shoal up|join --cache-size' (default
100GiB); least recently used models are evicted first, pinned ones never.`,
		Example: `  shoal weights add ./Qwen2.5-0.5B --name qwen-0.5b
  shoal weights ls
  shoal weights pull qwen-0.5b            # on another member
  shoal weights path qwen-0.5b            # the read-only model directory
  shoal weights verify qwen-0.5b          # re-hash it on disk`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.weightsAddCmd(), a.weightsLsCmd(), a.weightsPullCmd(), a.weightsPathCmd(), a.weightsVerifyCmd(),
		a.weightsRefCmd("rm", "Remove a model from this node's cache", "removed", (*node.Client).WeightsRemove),
		a.weightsRefCmd("pin", "Keep a model from eviction and removal (pins count)", "pinned", (*node.Client).WeightsPin),
		a.weightsRefCmd("unpin", "Release one pin of a model", "unpinned", (*node.Client).WeightsUnpin))
	return cmd
}

func (a *app) weightsAddCmd() *cobra.Command {
	var (
		name, hf, rev string
		sums          []string
	)
	cmd := &cobra.Command{
		Use:   "add DIR|FILE | URL... | --hf REPO_URL FILE...",
		Short: "Import a model from a directory or file, or download its first copy over HTTP(S)",
		Long: `Import a model into this node's weight cache and print its ID (alone on
stdout when stdout is not a terminal, for scripts).

  DIR|FILE   a local directory (its layout is kept: a Hugging Face model stays
             config.json, *.safetensors, tokenizer files ...) or one file. The
             daemon copies it while hashing it.
  URL...     one or more http(s) URLs, each one file of the model, named by
             the URL's last path element. --sha256 (once per URL, in order)
             gives the expected SHA-256 of each; a download that does not
             match is deleted and the add fails. Without it the origin is
             trusted for this first copy; every copy after it is checked.
  --hf REPO_URL FILE...
             files of a repository served in the Hugging Face layout, fetched
             from REPO_URL/resolve/REV/FILE (REV from --revision). --sha256 is
             the LFS oid of each file, in order, when known.

A broken download resumes where it stopped when the add is run again.`,
		Example: `  shoal weights add ./my-model --name my-model
  ID=$(shoal weights add /data/llama.gguf)
  shoal weights add https://example.com/m/model.safetensors --sha256 3f5a... --name m
  shoal weights add --hf https://huggingface.co/Qwen/Qwen2.5-0.5B --revision main \
      config.json model.safetensors tokenizer.json --name qwen-0.5b`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("%s needs a directory, a file, or URLs", cmd.CommandPath())
			}
			ctx := cmd.Context()
			if hf == "" && len(args) == 1 && !isURL(args[0]) {
				if len(sums) > 0 {
					return usagef("--sha256 applies to downloads, not to a local %s (its hash is computed)", args[0])
				}
				abs, err := filepath.Abs(args[0])
				if err != nil {
					return usagef("path %q: %v", args[0], err)
				}
				if _, err := os.Stat(abs); err != nil {
					return usagef("%v", err)
				}
				c, err := a.client()
				if err != nil {
					return err
				}
				res, err := c.WeightsAdd(ctx, node.WeightsAddRequest{Path: abs, Name: name})
				if err != nil {
					return err
				}
				return a.printWeightsResult(res, "added")
			}
			req, err := originRequest(args, hf, rev, sums, name)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.streamWeights("download", "downloaded", false, func(progress func(node.WeightsProgress)) (*node.WeightsResult, error) {
				return c.WeightsFetch(ctx, req, progress)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&name, "name", "", "name to map to the model's ID in the pool, e.g. qwen-0.5b")
	fs.StringArrayVar(&sums, "sha256", nil, "expected SHA-256 (hex) of each downloaded file, once per URL or FILE, in order")
	fs.StringVar(&hf, "hf", "", "repository URL in the Hugging Face layout; the arguments are file paths in it")
	fs.StringVar(&rev, "revision", "main", "branch, tag or commit of the --hf repository")
	return cmd
}

// originRequest builds an origin fetch from add's arguments.
func originRequest(args []string, hf, rev string, sums []string, name string) (node.WeightsFetchRequest, error) {
	req := node.WeightsFetchRequest{Name: name}
	if len(sums) > 0 && len(sums) != len(args) {
		return req, usagef("--sha256 given %d times for %d files; give it once per file, in order, or not at all", len(sums), len(args))
	}
	if hf != "" {
		if !isURL(hf) {
			return req, usagef("--hf %q is not an http(s) URL", hf)
		}
		for _, of := range weightcache.HFFiles(hf, rev, args...) {
			req.Files = append(req.Files, node.WeightsOriginFile{URL: of.URL, Path: of.Path})
		}
	} else {
		for _, u := range args {
			if !isURL(u) {
				return req, usagef("%q is not an http(s) URL; import one local directory or file at a time", u)
			}
			req.Files = append(req.Files, node.WeightsOriginFile{URL: u})
		}
	}
	for i, s := range sums {
		s = strings.ToLower(strings.TrimSpace(s))
		if len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
			return req, usagef("--sha256 %q is not 64 hex digits", sums[i])
		}
		req.Files[i].SHA256 = s
	}
	return req, nil
}

func isURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (a *app) weightsLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List models here and in the pool",
		Long: `List the models in this node's cache (most recently used first), then the
models only other members hold.

Columns: NAME, ID, STATE (complete, partial: some chunks here, remote: only
on other members), SIZE, PINS, PEERS (other alive members holding it complete).

-o json prints the array of GET /v1/weights: id, name, size_bytes, state,
pins, peers, last_used.`,
		Example: `  shoal weights ls
  shoal weights ls -o json | jq -r '.[] | select(.state=="complete") | .id'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.jsonOrTable(cmd.Context(), c, "/v1/weights", func() error {
				ms, err := c.WeightsList(cmd.Context())
				if err != nil {
					return err
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "NAME\tID\tSTATE\tSIZE\tPINS\tPEERS")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", dash(m.Name), m.ID, m.State, bytesHuman(m.SizeBytes), m.Pins, m.Peers)
				}
				return tw.Flush()
			})
		},
	}
}

func (a *app) weightsPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pull ID|NAME",
		Short: "Fetch a model from the pool's members into this node's cache",
		Long: `Fetch a model from every member that holds it (or part of it), verifying each
chunk against the model's ID. A name is looked up here, then in the members'
records. Progress (bytes, rate, peers, ETA) goes to stderr: a bar on a
terminal, plain lines otherwise. Interrupting a pull keeps the verified
chunks; pulling again resumes from them.

Prints the model's ID (alone when stdout is not a terminal); -o json prints
the result: id, name, size_bytes, state, fetched_bytes, resumed_bytes,
wasted_bytes, peers, banned (peers that sent bad chunks), elapsed_s.`,
		Example: `  shoal weights pull qwen-0.5b
  shoal weights pull bagaaiera...`,
		Args: exactArgs(1, "one model ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.streamWeights("pull", "pulled", true, func(progress func(node.WeightsProgress)) (*node.WeightsResult, error) {
				return c.WeightsPull(cmd.Context(), args[0], progress)
			})
		},
	}
}

func (a *app) weightsVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify ID|NAME",
		Short: "Re-hash a complete model's files on this node's disk",
		Long: `Read every file of a complete model back from this node's cache and check it
against the model's manifest (the SHA-256 of each whole file). A chunk is
verified when it is stored, and members check every chunk they fetch from
this node, reporting a bad one so this node finds the damage; verify looks for
it now, in the whole model.

A file that fails is dropped: the model, and any other model sharing that
file, becomes partial and is no longer announced or served whole. 'shoal
weights pull' fetches the missing file again. Exits non-zero when the model
fails. Progress goes to stderr: a bar on a terminal, plain lines otherwise.

Prints the model's ID (alone when stdout is not a terminal); -o json prints
the result: id, name, size_bytes, state, elapsed_s.`,
		Example: `  shoal weights verify qwen-0.5b`,
		Args:    exactArgs(1, "one model ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.streamWeights("verify", "verified", false, func(progress func(node.WeightsProgress)) (*node.WeightsResult, error) {
				return c.WeightsVerify(cmd.Context(), args[0], progress)
			})
		},
	}
}

func (a *app) weightsPathCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "path ID|NAME",
		Short: "Print the local directory of a complete model",
		Long: `Print the read-only directory holding a complete model's files (hard links to
verified blobs, plus .shoal/manifest.json), for scripts and runtimes. A model
that is not complete here is an error: pull it first.`,
		Example: `  ls "$(shoal weights path qwen-0.5b)"`,
		Args:    exactArgs(1, "one model ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.WeightsPath(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(p)
			}
			_, err = fmt.Fprintln(a.stdout, p.Path)
			return err
		},
	}
}

func (a *app) weightsRefCmd(use, short, done string, op func(*node.Client, context.Context, string) (node.WeightsModel, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID|NAME",
		Short: short,
		Args:  exactArgs(1, "one model ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			m, err := op(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(m)
			}
			_, err = fmt.Fprintf(a.stdout, "%s %s %s (pins: %d)\n", strings.ToUpper(done[:1])+done[1:], dash(m.Name), m.ID, m.Pins)
			return err
		},
	}
}

// streamWeights runs call, a streamed daemon call, with a progress bar
// named what on stderr (showing the peer count when peers is set), then
// prints its result as verb.
func (a *app) streamWeights(what, verb string, peers bool, call func(progress func(node.WeightsProgress)) (*node.WeightsResult, error)) error {
	bar := a.newProgress(what)
	bar.peers = peers
	res, err := call(bar.update)
	bar.end()
	if err != nil {
		return err
	}
	return a.printWeightsResult(res, verb)
}

// printWeightsResult prints the ID alone when stdout is not a terminal.
func (a *app) printWeightsResult(res *node.WeightsResult, verb string) error {
	if a.json() {
		return a.printJSON(res)
	}
	if !isTerminal(a.stdout) {
		_, err := fmt.Fprintln(a.stdout, res.ID)
		return err
	}
	msg := fmt.Sprintf("%s %s", strings.ToUpper(verb[:1])+verb[1:], res.ID)
	if res.Name != "" {
		msg += " as " + res.Name
	}
	msg += fmt.Sprintf(" (%s in %.1fs", bytesHuman(res.SizeBytes), res.ElapsedSec)
	if res.Peers > 0 {
		msg += fmt.Sprintf(", from %d peers", res.Peers)
	}
	if len(res.Banned) > 0 {
		msg += fmt.Sprintf(", %d banned for bad chunks", len(res.Banned))
	}
	_, err := fmt.Fprintln(a.stdout, msg+")")
	return err
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress draws transfer progress on stderr: a bar redrawn in place on a
// terminal, else a plain line per 10% step (and at least every 5 s).
type progress struct {
	w        io.Writer
	what     string
	tty      bool
	peers    bool // the work has sources: show how many
	drawn    bool
	step     int64
	lastLine time.Time
}

func (a *app) newProgress(what string) *progress {
	if a.json() {
		return &progress{w: io.Discard, what: what}
	}
	return &progress{w: a.stderr, what: what, tty: isTerminal(a.stderr), step: -1}
}

func (p *progress) update(ev node.WeightsProgress) {
	pct := int64(0)
	if ev.TotalBytes > 0 {
		pct = ev.DoneBytes * 100 / ev.TotalBytes
	}
	line := fmt.Sprintf("%3d%%  %s/%s  %s/s  ", pct, bytesHuman(ev.DoneBytes), bytesHuman(ev.TotalBytes), bytesHuman(int64(ev.RateBPS)))
	if p.peers {
		line += fmt.Sprintf("%d peers  ", ev.Peers)
	}
	line += "ETA " + eta(ev.ETASec)
	if p.tty {
		const width = 30
		n := int(pct * width / 100)
		fmt.Fprintf(p.w, "\r%s [%s%s] %s ", p.what, strings.Repeat("#", n), strings.Repeat("-", width-n), line)
		p.drawn = true
		return
	}
	if pct/10 == p.step && time.Since(p.lastLine) < 5*time.Second {
		return
	}
	p.step, p.lastLine = pct/10, time.Now()
	fmt.Fprintf(p.w, "%s %s: %s\n", p.what, ev.ID, line)
}

func (p *progress) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func eta(s float64) string {
	if s <= 0 {
		return "-"
	}
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

// bytesHuman formats n in binary units: "1.5 GiB".
func bytesHuman(n int64) string {
	units := []struct {
		name string
		size float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if float64(n) >= u.size {
			return fmt.Sprintf("%.1f %s", float64(n)/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// parseCacheSize reads --cache-size: a number of bytes with a unit (KiB,
// MiB, GiB, TiB, KB, MB, GB, TB; B or none for bytes). "0" means no limit,
// returned as -1 (node.Config's "no limit").
func parseCacheSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, errors.New("want a size such as 100GiB, 500GB or 0 (no limit)")
	}
	mult := map[string]float64{"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q; want KiB, MiB, GiB, TiB, KB, MB, GB or TB", unit)
	}
	b := v * mult
	if b >= 1<<62 {
		return 0, errors.New("too large")
	}
	if int64(b) == 0 {
		return -1, nil
	}
	return int64(b), nil
}
