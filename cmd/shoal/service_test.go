package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shoalmesh/shoal/node"
)

// shoalBinary copies the test binary (which runs as shoal with envAsMain)
// to dir/name, so that `service install` sees a real executable outside
// the build cache, as an installed shoal would be.
func shoalBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "shoal")
	if err := os.Link(self, dst); err == nil {
		return dst
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// shoalProcess runs bin as the shoal CLI in its own process.
func shoalProcess(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), envAsMain+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

// parseUnit reads a unit file the way systemd does for what we write:
// comments, [Section] headers, Key=Value lines; no line continuations
// (the generator never writes one).
func parseUnit(t *testing.T, text string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("line %d ends in a backslash (a continuation): %q", i+1, line)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is neither a section nor Key=Value in one", i+1, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single value of section.key.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s = %q; want exactly one value", section, key, v)
	}
	return v[0]
}

// splitExec splits an ExecStart value into words following systemd.syntax(7)
// and systemd.service(5): whitespace separates words, double or single
// quotes group them, C escapes inside and outside quotes, "%%" is "%" and
// "$$" is "$". A lone "%" or "$" would be a specifier or a variable: an
// error here.
func splitExec(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote rune // the open quote, or 0
	)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == 0 && (r == ' ' || r == '\t'):
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			continue
		case quote == 0 && (r == '"' || r == '\'') && !in:
			quote, in = r, true
			continue
		case quote != 0 && r == quote:
			quote = 0
			if i+1 < len(rs) && rs[i+1] != ' ' && rs[i+1] != '\t' {
				return nil, errors.New("closing quote not followed by a space")
			}
			continue
		case r == '\\':
			i++
			if i >= len(rs) {
				return nil, errors.New("trailing backslash")
			}
			switch rs[i] {
			case 'n':
				cur.WriteByte('\n')
			case 't':
				cur.WriteByte('\t')
			case 'r':
				cur.WriteByte('\r')
			case '\\', '"', '\'', ' ':
				cur.WriteRune(rs[i])
			case 'x':
				if i+2 >= len(rs) {
					return nil, errors.New("short \\x escape")
				}
				b, err := strconv.ParseUint(string(rs[i+1:i+3]), 16, 8)
				if err != nil {
					return nil, err
				}
				cur.WriteByte(byte(b))
				i += 2
			default:
				return nil, errors.New("unknown escape \\" + string(rs[i]))
			}
		case r == '%' || r == '$':
			if i+1 >= len(rs) || rs[i+1] != r {
				return nil, errors.New("lone " + string(r) + " (a specifier or a variable)")
			}
			cur.WriteRune(r)
			i++
		default:
			cur.WriteRune(r)
		}
		in = true
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// The unit `service install --dry-run` prints says what the daemon needs:
// this binary by absolute path, the home, `up` with exactly the flags
// given (which parse back to the same values), a restart policy, and a stop
// that the daemon handles as a graceful leave within the timeout.
func TestServiceUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI as a process")
	}
	dir := t.TempDir()
	bin := shoalBinary(t, filepath.Join(dir, "opt dir")) // a space in the binary's path
	home := filepath.Join(dir, "home $HOME 100%")
	gpuFile := filepath.Join(dir, "gpus.yaml")
	tests := []struct {
		name string
		args []string // after `service install --dry-run`
		user bool
		want []string // ExecStart after the binary, --home HOME, up
	}{
		{"bare", nil, false, nil},
		{"user", []string{"--user"}, true, nil},
		{"flags", []string{
			"--gpu", "RTX 4090:24GiB:16384", "--gpu", "A100:80GiB", "--mdns=false",
			"--name", `lab "one" $1 %n`, "--listen", "/ip4/0.0.0.0/tcp/5000", "--gateway", "0.0.0.0:8080",
			"--join-timeout", "1m30s", "--cache-size", "2TB",
		}, false, []string{
			"--cache-size=2TB", "--gateway=0.0.0.0:8080", "--gpu=RTX 4090:24GiB:16384", "--gpu=A100:80GiB",
			"--join-timeout=1m30s", "--listen=/ip4/0.0.0.0/tcp/5000", "--mdns=false", `--name=lab "one" $1 %n`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--home", home, "service", "install", "--dry-run"}, tt.args...)
			out, stderr, err := shoalProcess(t, bin, args...)
			if err != nil {
				t.Fatalf("shoal %q: %v, stderr %q", args, err, stderr)
			}
			u := parseUnit(t, out)
			argv, err := splitExec(u.one(t, "Service", "ExecStart"))
			if err != nil {
				t.Fatalf("ExecStart %q: %v", u.one(t, "Service", "ExecStart"), err)
			}
			want := append([]string{bin, "--home", home, "up"}, tt.want...)
			if !reflect.DeepEqual(argv, want) {
				t.Errorf("ExecStart = %q; want %q", argv, want)
			}
			checkUnitKeys(t, u, tt.user)
			checkArgsParse(t, argv[1:])
		})
	}

	t.Run("file flag made absolute", func(t *testing.T) {
		cmd := exec.Command(bin, "--home", home, "service", "install", "--dry-run", "--gpu-file", "gpus.yaml")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), envAsMain+"=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		argv, err := splitExec(parseUnit(t, string(out)).one(t, "Service", "ExecStart"))
		if err != nil || argv[len(argv)-1] != "--gpu-file="+gpuFile {
			t.Errorf("ExecStart = %q (%v); want it to end in --gpu-file=%s", argv, err, gpuFile)
		}
	})
}

// checkUnitKeys asserts the unit's restart and stop policy.
func checkUnitKeys(t *testing.T, u unitFile, user bool) {
	t.Helper()
	wanted := "multi-user.target"
	if user {
		wanted = "default.target"
	}
	for _, kv := range []struct{ section, key, want string }{
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "Type", "exec"},
		{"Service", "Restart", "on-failure"},
		{"Service", "KillSignal", "SIGTERM"}, // runDaemon stops gracefully on SIGINT and SIGTERM
		{"Service", "KillMode", "process"},   // replicas outlive a crashed daemon, to be adopted
		{"Install", "WantedBy", wanted},
	} {
		if got := u.one(t, kv.section, kv.key); got != kv.want {
			t.Errorf("[%s] %s = %q; want %q", kv.section, kv.key, got, kv.want)
		}
	}
	stop, err := strconv.Atoi(u.one(t, "Service", "TimeoutStopSec"))
	// A graceful stop is a leave (DefaultLeaveTimeout) and the replicas'
	// stop grace (10s); systemd must wait for both.
	if need := node.DefaultLeaveTimeout + 10*time.Second; err != nil || time.Duration(stop)*time.Second <= need {
		t.Errorf("TimeoutStopSec = %d (%v); want more than %v", stop, err, need)
	}
}

// checkArgsParse parses a unit's command line with the CLI's own flags:
// `up` must accept every flag the unit passes it.
func checkArgsParse(t *testing.T, args []string) {
	t.Helper()
	a := &app{stdout: io.Discard, stderr: io.Discard}
	root := a.rootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd.Name() != "up" {
		t.Fatalf("Find(%q) = %v, %v; want the up command", args, cmd, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("up flags %q: %v", rest, err)
	}
}

// systemd itself accepts the unit: `systemd-analyze verify` loads it and
// checks every key and that ExecStart names an executable.
func TestServiceUnitSystemdVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the CLI as a process")
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd); the unit is checked by TestServiceUnit only")
	}
	dir := t.TempDir()
	bin := shoalBinary(t, filepath.Join(dir, "opt dir"))
	for _, user := range []bool{false, true} {
		args := []string{"--home", filepath.Join(dir, "home 100%"), "service", "install", "--dry-run",
			"--gpu", "RTX 4090:24GiB:16384", "--name", `lab "one" $x`}
		verify := []string{"verify"}
		if user {
			args = append(args, "--user")
			verify = []string{"--user", "verify"}
		}
		out, stderr, err := shoalProcess(t, bin, args...)
		if err != nil {
			t.Fatalf("shoal %q: %v, stderr %q", args, err, stderr)
		}
		unitDir := filepath.Join(dir, strconv.FormatBool(user))
		if err := os.MkdirAll(unitDir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(unitDir, serviceUnit)
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(analyze, append(verify, path)...)
		// A user manager wants a runtime directory even to verify.
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir(), "SYSTEMD_LOG_LEVEL=notice")
		got, err := cmd.CombinedOutput()
		// systemd logs a bad key and carries on: any line naming our
		// unit is a failure too.
		var ours []string
		for _, line := range strings.Split(string(got), "\n") {
			if strings.Contains(line, serviceUnit) {
				ours = append(ours, line)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("systemd-analyze %s %s: %v\n%s", strings.Join(verify, " "), path, err, got)
		}
	}
}

// install writes the unit (atomically, readable by all) where systemd is
// not running and says it did not enable it; a system unit needs root;
// uninstall removes it and a second uninstall says it is not installed.
func TestServiceInstallWithoutSystemd(t *testing.T) {
	dir := t.TempDir()
	h := serviceHost{root: false, systemDir: filepath.Join(dir, "system"), userDir: filepath.Join(dir, "user"),
		executable: "/usr/local/bin/shoal"}
	spec := unitSpec{User: true, Exec: []string{"/usr/local/bin/shoal", "--home", "/srv/shoal", "up"}}
	ctx := context.Background()

	if _, err := installUnit(ctx, h, unitSpec{Exec: spec.Exec}, true, "/srv/shoal"); !errors.Is(err, errNeedRoot) {
		t.Errorf("system unit as a user: err = %v; want errNeedRoot", err)
	}
	res, err := installUnit(ctx, h, spec, true, "/srv/shoal")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.userDir, serviceUnit)
	if res.Path != path || res.Enabled || res.Started || !strings.Contains(res.Note, errNoSystemd.Error()) {
		t.Errorf("install = %+v; want the unit at %s, not enabled or started, with a note that systemd is not running", res, path)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != renderUnit(spec) {
		t.Errorf("unit file = %q (%v); want renderUnit(spec)", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("unit file mode = %v (%v); want 0644", fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(h.userDir); len(entries) != 1 {
		t.Errorf("unit dir holds %d entries; want the unit alone (no temporary file left)", len(entries))
	}

	h.root = true
	res, err = installUnit(ctx, h, unitSpec{Exec: spec.Exec}, false, "/srv/shoal")
	if err != nil || res.Path != filepath.Join(h.systemDir, serviceUnit) {
		t.Errorf("system unit as root: %+v, %v; want it in %s", res, err, h.systemDir)
	}

	if got, err := uninstallUnit(ctx, h, true); err != nil || got != path {
		t.Fatalf("uninstall = %q, %v; want %s removed", got, err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit after uninstall: %v; want it gone", err)
	}
	if _, err := uninstallUnit(ctx, h, true); !errors.Is(err, errNotInstalled) {
		t.Errorf("second uninstall: %v; want errNotInstalled", err)
	}
}

// Where systemd does not run, `service status` fails with a clear message
// rather than systemctl's.
func TestServiceStatusWithoutSystemd(t *testing.T) {
	h, err := localServiceHost()
	if err != nil {
		t.Fatal(err)
	}
	if h.managed() == nil {
		t.Skip("systemd runs on this machine; the message for its absence cannot be seen here")
	}
	code, stdout, stderr := shoal(t, "service", "status")
	if code != exitError || stdout != "" || !strings.Contains(stderr, errNoSystemd.Error()) || !strings.Contains(stderr, "shoal up --detach") {
		t.Errorf("shoal service status = %d, stdout %q, stderr %q; want 1 and that systemd is not running", code, stdout, stderr)
	}
}

func TestServiceInstallUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"service", "install", "--detach"},
		{"service", "install", "--dry-run", "--gpu", "no-vram"},
		{"service", "install", "--dry-run", "--listen", "not-a-multiaddr"},
		{"service", "install", "extra"},
	} {
		code, stdout, stderr := shoal(t, args...)
		if code != exitUsage || stdout != "" {
			t.Errorf("shoal %q = %d, stdout %q, stderr %q; want %d and no unit", args, code, stdout, stderr, exitUsage)
		}
	}
}

// Any word survives quoteExecArg and systemd's splitting unchanged.
func FuzzQuoteExecArg(f *testing.F) {
	for _, s := range []string{"", "plain", "with space", `"quoted"`, `back\slash`, "100%", "$HOME", "${X}", "tab\tnew\nline", "\x01\x7f", "'single'", "ünï"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return // a unit file is UTF-8 text without NULs
		}
		q := quoteExecArg(s)
		got, err := splitExec("/bin/shoal " + q + " last")
		if err != nil || len(got) != 3 || got[1] != s || got[2] != "last" {
			t.Errorf("splitExec(quoteExecArg(%q) = %q) = %q, %v; want [/bin/shoal %q last]", s, q, got, err, s)
		}
	})
}
