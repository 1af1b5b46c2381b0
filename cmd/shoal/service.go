package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoalmesh/shoal/node"
)

// serviceUnit is the name of the systemd unit `shoal service` manages.
const serviceUnit = "shoal.service"

// The stop sequence the unit asks of systemd. The daemon treats SIGTERM
// like Ctrl-C: it drains the requests in flight on its replicas
// (node.DefaultDrainTimeout, 10s), leaves the pool gracefully
// (node.DefaultLeaveTimeout, 5s) and stops its replicas (10s grace each, in
// parallel): 25s at most. KillMode=process
// signals the daemon alone: it stops its replicas itself on a graceful stop,
// and when it crashes (or outlives TimeoutStopSec and is killed) its
// replicas keep running and the next start adopts them, as after any
// killed daemon; mixed or control-group would kill them with it.
const (
	unitKillSignal  = "SIGTERM"
	unitStopTimeout = 30 * time.Second
	unitRestartSec  = 5 * time.Second
	unitNoFile      = 65536 // libp2p holds a socket per connection and stream
)

var (
	errNoSystemd    = errors.New("service: systemd is not running on this machine")
	errNeedRoot     = errors.New("service: a system unit needs root")
	errNotInstalled = errors.New("service: not installed")
)

// serviceHost is what the service commands need of the machine. The CLI
// uses localServiceHost; tests point it at a directory of their own.
type serviceHost struct {
	root       bool   // effective user is root
	systemDir  string // where system units go: /etc/systemd/system
	userDir    string // where user units go: ~/.config/systemd/user
	booted     bool   // systemd is the init system (/run/systemd/system exists)
	systemctl  string // path of systemctl; empty when there is none
	executable string // absolute path of this binary
}

func localServiceHost() (serviceHost, error) {
	h := serviceHost{root: os.Geteuid() == 0, systemDir: "/etc/systemd/system"}
	if dir, err := os.UserConfigDir(); err == nil {
		h.userDir = filepath.Join(dir, "systemd", "user")
	}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		h.booted = true
	}
	h.systemctl, _ = exec.LookPath("systemctl")
	exe, err := os.Executable()
	if err != nil {
		return h, fmt.Errorf("service: find this binary: %w", err)
	}
	h.executable = exe
	return h, nil
}

// unitPath is where the unit file lives.
func (h serviceHost) unitPath(user bool) (string, error) {
	if !user {
		if !h.root {
			return "", fmt.Errorf("%w; run it with sudo, or pass --user for a unit of your own", errNeedRoot)
		}
		return filepath.Join(h.systemDir, serviceUnit), nil
	}
	if h.userDir == "" {
		return "", errors.New("service: no user configuration directory ($XDG_CONFIG_HOME or $HOME)")
	}
	return filepath.Join(h.userDir, serviceUnit), nil
}

// systemctlCmd runs systemctl with --user for user units.
func (h serviceHost) systemctlCmd(ctx context.Context, user bool, args ...string) *exec.Cmd {
	if user {
		args = append([]string{"--user"}, args...)
	}
	return exec.CommandContext(ctx, h.systemctl, args...)
}

// managed says whether systemctl can act on units here, or why not.
func (h serviceHost) managed() error {
	switch {
	case !h.booted:
		return fmt.Errorf("%w (no /run/systemd/system)", errNoSystemd)
	case h.systemctl == "":
		return fmt.Errorf("%w (no systemctl in PATH)", errNoSystemd)
	}
	return nil
}

// unitSpec is what a unit file says.
type unitSpec struct {
	User bool     // a user unit (WantedBy=default.target), else a system one
	Exec []string // ExecStart: the absolute path of shoal and its arguments
}

// renderUnit writes the unit file for s.
func renderUnit(s unitSpec) string {
	quoted := make([]string, len(s.Exec))
	for i, arg := range s.Exec {
		quoted[i] = quoteExecArg(arg)
	}
	wanted := "multi-user.target"
	if s.User {
		wanted = "default.target"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by 'shoal service install'; 'shoal service uninstall' removes it.
[Unit]
Description=shoal node: this machine's GPUs in a peer-to-peer pool
Documentation=https://github.com/shoalmesh/shoal
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart=%s
Restart=on-failure
RestartSec=%d
# SIGTERM makes the daemon leave the pool and stop its replicas. Only the
# daemon is signalled: replicas that outlive a crash are adopted on restart.
KillSignal=%s
KillMode=process
TimeoutStopSec=%d
LimitNOFILE=%d

[Install]
WantedBy=%s
`, strings.Join(quoted, " "), int(unitRestartSec.Seconds()), unitKillSignal,
		int(unitStopTimeout.Seconds()), unitNoFile, wanted)
	return b.String()
}

// quoteExecArg writes one word of an ExecStart line so systemd reads it
// back unchanged: "%" and "$" are doubled (specifiers and variables), and a
// word with anything but plain characters goes in double quotes with C
// escapes.
func quoteExecArg(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("%$_@+=:,./-", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// serviceInstall is what `service install` did, for -o json.
type serviceInstall struct {
	Unit      string   `json:"unit"`
	Path      string   `json:"path"`
	User      bool     `json:"user"`
	ExecStart []string `json:"exec_start"`
	Enabled   bool     `json:"enabled"`
	Started   bool     `json:"started"`
	Note      string   `json:"note,omitempty"` // why it was not enabled or started
}

func (a *app) serviceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Run the daemon as a systemd service on this machine",
		Long: `Install, remove or inspect a systemd unit that runs 'shoal up' on this
machine's home directory: started at boot (or at login, for a user unit),
restarted when it fails, and stopped gracefully (the node leaves the pool).

As root the unit is a system unit in /etc/systemd/system; with --user it is
a unit of your own in ~/.config/systemd/user.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.serviceInstallCmd(), a.serviceUninstallCmd(), a.serviceStatusCmd())
	return cmd
}

func (a *app) serviceInstallCmd() *cobra.Command {
	var (
		user, dryRun, noStart bool
		f                     daemonFlags
	)
	// The daemon's flags sit in a set of their own so that exactly those
	// given here are written into ExecStart.
	upFlags := &cobra.Command{}
	f.register(upFlags)
	upFlags.Flags().MarkHidden("detach")
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Write, enable and start a systemd unit that runs 'shoal up'",
		Long: `Write a systemd unit that runs this binary as 'shoal up' on this home, then
enable and start it (--no-start: write and enable only; --dry-run: print the
unit and change nothing). Any flag of 'shoal up' given here is passed on.

'shoal up' resumes the pool the home belongs to, or starts a new one. To put
this machine in an existing pool, join it first ('shoal join TOKEN --detach',
then 'shoal leave'), and install the service after: the unit resumes that
pool and the join token never sits in a unit file.

The unit runs the binary where it is now: keep it there (or install it, e.g.
in /usr/local/bin, and run that copy). Reinstalling rewrites the unit.
Logs go to the journal: journalctl -u shoal (journalctl --user -u shoal).`,
		Example: `  # as root: a system unit, started at boot
  sudo shoal service install --gpu "RTX 4090:24GiB:16384" --gateway 0.0.0.0:8080

  # a unit of your own (add 'loginctl enable-linger $USER' to start it at boot)
  shoal service install --user

  # print the unit only
  shoal service install --dry-run --name lab-1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.detach {
				return usagef("--detach: the service manager keeps the daemon in the background; leave it out")
			}
			if _, err := f.config(a); err != nil {
				return err
			}
			h, err := localServiceHost()
			if err != nil {
				return err
			}
			home, err := a.resolveHome()
			if err != nil {
				return err
			}
			argv, err := serviceExec(h.executable, home, upFlags.Flags())
			if err != nil {
				return err
			}
			spec := unitSpec{User: user, Exec: argv}
			if dryRun {
				_, err := io.WriteString(a.stdout, renderUnit(spec))
				return err
			}
			res, err := installUnit(cmd.Context(), h, spec, !noStart, home)
			if err != nil {
				return err
			}
			return a.printServiceInstall(res)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&user, "user", false, "install a unit of your own in ~/.config/systemd/user (without it: a system unit, which needs root)")
	fs.BoolVar(&dryRun, "dry-run", false, "print the unit and change nothing")
	fs.BoolVar(&noStart, "no-start", false, "write and enable the unit but do not start it now")
	fs.AddFlagSet(upFlags.Flags())
	return cmd
}

// serviceExec is the ExecStart command line: this binary, the absolute
// home, `up`, and every daemon flag that was given (file names made
// absolute, since a unit runs in /).
func serviceExec(exe, home string, upFlags *pflag.FlagSet) ([]string, error) {
	if !filepath.IsAbs(exe) {
		return nil, fmt.Errorf("service: this binary's path %q is not absolute", exe)
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return nil, fmt.Errorf("service: %s is a temporary build ('go run'); install shoal first (make build, go install) and run that binary", exe)
	}
	home, err := filepath.Abs(home)
	if err != nil {
		return nil, fmt.Errorf("service: home: %w", err)
	}
	args := []string{exe, "--home", home, "up"}
	var ferr error
	upFlags.VisitAll(func(fl *pflag.Flag) {
		if !fl.Changed || fl.Name == "detach" {
			return
		}
		vals := []string{fl.Value.String()}
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			vals = sv.GetSlice()
		}
		_, isFile := fl.Annotations[cobra.BashCompFilenameExt]
		for _, v := range vals {
			if isFile && v != "" {
				abs, err := filepath.Abs(v)
				if err != nil && ferr == nil {
					ferr = fmt.Errorf("service: --%s %q: %w", fl.Name, v, err)
				}
				v = abs
			}
			args = append(args, "--"+fl.Name+"="+v)
		}
	})
	return args, ferr
}

// installUnit writes the unit and, where systemd runs, reloads it, enables
// it and (start) restarts it. A daemon already running on the home outside
// the unit is left alone and the unit not started: two daemons cannot share
// a home.
func installUnit(ctx context.Context, h serviceHost, spec unitSpec, start bool, home string) (serviceInstall, error) {
	path, err := h.unitPath(spec.User)
	if err != nil {
		return serviceInstall{}, err
	}
	res := serviceInstall{Unit: serviceUnit, Path: path, User: spec.User, ExecStart: spec.Exec}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return res, fmt.Errorf("service: %w", err)
	}
	if err := node.WriteFileAtomic(path, []byte(renderUnit(spec)), 0o644); err != nil {
		return res, fmt.Errorf("service: write unit: %w", err)
	}
	if err := h.managed(); err != nil {
		res.Note = err.Error() + "; the unit was written but not enabled"
		return res, nil
	}
	if err := h.run(ctx, spec.User, "daemon-reload"); err != nil {
		return res, err
	}
	if err := h.run(ctx, spec.User, "enable", serviceUnit); err != nil {
		return res, err
	}
	res.Enabled = true
	if !start {
		return res, nil
	}
	if pid, ok := foreignDaemon(ctx, h, spec.User, home); ok {
		res.Note = fmt.Sprintf("a daemon not started by systemd runs on %s (pid %d); stop it with 'shoal leave', then '%s start shoal'",
			home, pid, systemctlName(spec.User))
		return res, nil
	}
	if err := h.run(ctx, spec.User, "restart", serviceUnit); err != nil {
		return res, err
	}
	res.Started = true
	return res, nil
}

// foreignDaemon reports a daemon answering on home that is not the unit's
// main process.
func foreignDaemon(ctx context.Context, h serviceHost, user bool, home string) (int, bool) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := node.NewClient(home).Status(sctx)
	if err != nil {
		return 0, false
	}
	out, err := h.systemctlCmd(ctx, user, "show", serviceUnit, "--property=MainPID", "--value").Output()
	if err == nil {
		if main, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && main == st.PID {
			return 0, false
		}
	}
	return st.PID, true
}

// systemctlName is how a user calls systemctl for the unit.
func systemctlName(user bool) string {
	if user {
		return "systemctl --user"
	}
	return "systemctl"
}

// run runs systemctl and turns a failure into an error with its output.
func (h serviceHost) run(ctx context.Context, user bool, args ...string) error {
	out, err := h.systemctlCmd(ctx, user, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("service: systemctl %s: %s: %w", strings.Join(args, " "), bytes.TrimSpace(out), err)
	}
	return nil
}

func (a *app) printServiceInstall(r serviceInstall) error {
	if a.json() {
		return a.printJSON(r)
	}
	sc, jc, uf := systemctlName(r.User), "journalctl", ""
	if r.User {
		jc, uf = "journalctl --user", " --user"
	}
	fmt.Fprintf(a.stdout, "wrote %s\n", r.Path)
	switch {
	case r.Started:
		fmt.Fprintf(a.stdout, "enabled and started %s\n", r.Unit)
	case r.Enabled:
		fmt.Fprintf(a.stdout, "enabled %s (start it with '%s start shoal')\n", r.Unit, sc)
	}
	if r.Note != "" {
		fmt.Fprintf(a.stdout, "note: %s\n", r.Note)
	}
	fmt.Fprintf(a.stdout, "status: shoal service status%s; logs: %s -u shoal\n", uf, jc)
	if r.User {
		fmt.Fprintln(a.stdout, "to start it at boot without logging in: loginctl enable-linger $USER")
	}
	return nil
}

func (a *app) serviceUninstallCmd() *cobra.Command {
	var user bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop, disable and remove the systemd unit",
		Long: `Stop the service (the node leaves the pool gracefully), disable it and remove
its unit file. The home directory, with the node's key and pool, is kept.`,
		Example: `  sudo shoal service uninstall
  shoal service uninstall --user`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := localServiceHost()
			if err != nil {
				return err
			}
			path, err := uninstallUnit(cmd.Context(), h, user)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(struct {
					Unit    string `json:"unit"`
					Path    string `json:"path"`
					Removed bool   `json:"removed"`
				}{serviceUnit, path, true})
			}
			_, err = fmt.Fprintf(a.stdout, "removed %s (the home directory is kept)\n", path)
			return err
		},
	}
	cmd.Flags().BoolVar(&user, "user", false, "remove the user unit instead of the system unit")
	return cmd
}

// uninstallUnit disables and stops the unit where systemd runs, then
// removes its file.
func uninstallUnit(ctx context.Context, h serviceHost, user bool) (string, error) {
	path, err := h.unitPath(user)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return path, fmt.Errorf("%w: no unit at %s", errNotInstalled, path)
	}
	managed := h.managed() == nil
	if managed {
		if err := h.run(ctx, user, "disable", "--now", serviceUnit); err != nil {
			return path, err
		}
	}
	if err := os.Remove(path); err != nil {
		return path, fmt.Errorf("service: %w", err)
	}
	if managed {
		if err := h.run(ctx, user, "daemon-reload"); err != nil {
			return path, err
		}
	}
	return path, nil
}

// serviceState is `service status -o json`: systemd's view of the unit.
type serviceState struct {
	Unit        string `json:"unit"`
	Path        string `json:"path"`
	LoadState   string `json:"load_state"`   // loaded, not-found, ...
	ActiveState string `json:"active_state"` // active, inactive, failed, activating, ...
	SubState    string `json:"sub_state"`    // running, dead, auto-restart, ...
	MainPID     int    `json:"main_pid"`
	Restarts    int    `json:"restarts"`
	Since       string `json:"since,omitempty"`
}

func (a *app) serviceStatusCmd() *cobra.Command {
	var user bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the systemd unit's state (systemctl status)",
		Long: `Show what systemd says of the unit: 'systemctl status shoal' with the last
log lines; -o json gives its load, active and sub state, main PID and restart
count. 'shoal status' shows the node itself.`,
		Example: `  shoal service status
  shoal service status --user -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := localServiceHost()
			if err != nil {
				return err
			}
			if err := h.managed(); err != nil {
				return fmt.Errorf("%w; run the daemon with 'shoal up --detach' instead", err)
			}
			if a.json() {
				st, err := unitState(cmd.Context(), h, user)
				if err != nil {
					return err
				}
				return a.printJSON(st)
			}
			c := h.systemctlCmd(cmd.Context(), user, "status", "--no-pager", "--full", serviceUnit)
			c.Stdout, c.Stderr = a.stdout, a.stderr
			err = c.Run()
			var ee *exec.ExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ee) && ee.ExitCode() == 3: // installed, not running
				return nil
			case errors.As(err, &ee) && ee.ExitCode() == 4:
				return fmt.Errorf("%w: systemd knows no %s; see 'shoal service install --help'", errNotInstalled, serviceUnit)
			}
			return fmt.Errorf("service: systemctl status: %w", err)
		},
	}
	cmd.Flags().BoolVar(&user, "user", false, "the user unit instead of the system unit")
	return cmd
}

// unitState reads the unit's properties with systemctl show.
func unitState(ctx context.Context, h serviceHost, user bool) (serviceState, error) {
	st := serviceState{Unit: serviceUnit}
	out, err := h.systemctlCmd(ctx, user, "show", serviceUnit,
		"--property=LoadState,ActiveState,SubState,MainPID,NRestarts,FragmentPath,ActiveEnterTimestamp").Output()
	if err != nil {
		return st, fmt.Errorf("service: systemctl show: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "LoadState":
			st.LoadState = v
		case "ActiveState":
			st.ActiveState = v
		case "SubState":
			st.SubState = v
		case "MainPID":
			st.MainPID, _ = strconv.Atoi(v)
		case "NRestarts":
			st.Restarts, _ = strconv.Atoi(v)
		case "FragmentPath":
			st.Path = v
		case "ActiveEnterTimestamp":
			st.Since = v
		}
	}
	if st.LoadState == "not-found" {
		return st, fmt.Errorf("%w: systemd knows no %s", errNotInstalled, serviceUnit)
	}
	return st, nil
}
