package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node"
)

// leaveWait bounds how long `shoal leave` waits for the daemon to stop.
const leaveWait = 15 * time.Second

func (a *app) tokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Print the pool's join token",
		Long: `Print the join token of this node's pool, alone on stdout, for
'shoal join TOKEN' on another machine. The daemon must be running.`,
		Example: `  shoal token
  ssh gpu-box shoal join --detach "$(shoal token)"
  shoal token -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			tok, err := c.Token(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(node.TokenResponse{Token: tok})
			}
			_, err = fmt.Fprintln(a.stdout, tok)
			return err
		},
	}
}

func (a *app) nodesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the pool's members and their GPUs",
		Long: `List every member of the pool this node knows of, one row per GPU (a member
without GPUs gets one row with "-"). This node comes first.

Columns: PEER (first 12 characters of the peer ID), NAME, STATE (alive,
suspect, dead, left), GPU, VRAM (free/total, as the hardware reports it),
RESERVED (what the member's ledger has promised to replicas: the share of
the card and its VRAM, e.g. "0.5 GPU, 12.0 GiB"; "-" when nothing), CUDA
CORES, LINK (PCIe or NVLink, "-" when unknown), UTIL (GPU utilisation, "-"
for declared GPUs), SOURCE (nvml: measured; declared: stated by the
operator). Reservations reach other members with the record, within a few
seconds.

-o json prints the array the control API returns (GET /v1/nodes).`,
		Example: `  shoal nodes
  shoal nodes -o json | jq '.[] | {name, gpus: [.gpus[].name]}'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.jsonOrTable(cmd.Context(), c, "/v1/nodes", func() error {
				ms, err := c.Nodes(cmd.Context())
				if err != nil {
					return err
				}
				return writeNodesTable(a.stdout, ms)
			})
		},
	}
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show this node: peer ID, pool, addresses, members, uptime",
		Example: `  shoal status
  shoal status -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.jsonOrTable(cmd.Context(), c, "/v1/status", func() error {
				st, err := c.Status(cmd.Context())
				if err != nil {
					return err
				}
				return writeStatus(a.stdout, st, time.Now())
			})
		},
	}
}

func (a *app) recordCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "record PEER_ID",
		Short: "Show a member's verified node record from the pool's DHT",
		Long: `Fetch the node record a member published in the pool's DHT (signed by its key
and verified on receipt) and print it. PEER_ID may be a unique prefix of a
member's ID, such as the 12 characters 'shoal nodes' shows.`,
		Example: `  shoal record 12D3KooWAbCd
  shoal record 12D3KooWAbCdEfGh... -o json`,
		Args: exactArgs(1, "one argument, the PEER_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			raw, err := c.Get(cmd.Context(), "/v1/records/"+url.PathEscape(args[0]))
			var apiErr *node.APIError
			if errors.As(err, &apiErr) && apiErr.StatusCode == 400 {
				return &usageError{err}
			}
			if err != nil {
				return err
			}
			if a.json() {
				return a.printRaw(raw)
			}
			return writeRecord(a.stdout, raw)
		},
	}
}

func (a *app) leaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Leave the pool gracefully and stop the daemon",
		Long: `Ask this machine's daemon to leave its pool (the others see it as "left", not
dead) and stop, then wait up to 15s until it has. The home keeps its pool, so
'shoal up' later resumes it.`,
		Example: `  shoal leave
  shoal leave --home /srv/shoal`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), leaveWait)
			defer cancel()
			lr, err := c.Leave(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(lr)
			}
			_, err = fmt.Fprintf(a.stdout, "left pool %s\n", lr.PoolID)
			return err
		},
	}
}

func (a *app) resetIdentityCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset-identity",
		Short: "Give this node a new key (a new peer ID)",
		Long: `Replace the node's identity key with a new one. Do this when two machines run
with the same identity, for example after a home directory was copied: the
pool refuses the second one until it has its own key.

The pool membership (pool.json) is kept. It refuses while a daemon runs on
the home; stop it first with 'shoal leave'.`,
		Example: `  shoal leave && shoal reset-identity && shoal up --detach`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			home, err := a.resolveHome()
			if err != nil {
				return err
			}
			id, err := node.ResetIdentity(home)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(struct {
					PeerID string `json:"peer_id"`
					Home   string `json:"home"`
				}{id.String(), home})
			}
			_, err = fmt.Fprintf(a.stdout, "new identity %s (pool membership kept in %s)\n", id, filepath.Join(home, node.PoolFile))
			return err
		},
	}
}

// versionInfo is what `shoal version` prints.
type versionInfo struct {
	Version  string `json:"version"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// CGO is false in a static build (CGO_ENABLED=0, as the release
	// builds): NVML needs cgo, so such a binary measures no GPU and uses
	// the GPUs declared with --gpu or --gpu-file.
	CGO bool `json:"cgo"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		// `go install .../cmd/shoal@v1.2.3` stamps the module version.
		if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "CGO_ENABLED":
				v.CGO = s.Value == "1"
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of shoal",
		Example: `  shoal version
  shoal version -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if a.json() {
				return a.printJSON(v)
			}
			fmt.Fprintf(a.stdout, "shoal %s\n", v.Version)
			fmt.Fprintf(a.stdout, "go    %s %s/%s\n", v.Go, v.OS, v.Arch)
			if v.Revision != "" {
				mod := ""
				if v.Modified {
					mod = " (modified)"
				}
				fmt.Fprintf(a.stdout, "rev   %s%s %s\n", v.Revision, mod, v.Time)
			}
			if v.CGO {
				fmt.Fprintln(a.stdout, "gpus  measured by NVML where the driver is installed, else declared")
			} else {
				fmt.Fprintln(a.stdout, "gpus  declared only (--gpu, --gpu-file): built without cgo, so no NVML")
			}
			return nil
		},
	}
}
