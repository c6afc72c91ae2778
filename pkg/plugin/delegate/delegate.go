// Package delegate runs a delegated CNI plugin (the IPAM plugin of a main
// plugin) the way libcni's invoke package does, without linking what invoke
// links for tracing (OpenTelemetry): a main plugin is exec'd for every
// container, and every megabyte it links is paid on every call.
//
// The delegate gets this process's environment with CNI_COMMAND set to the
// verb, the network configuration on stdin, and is looked up in CNI_PATH.
package delegate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
)

// Add runs the plugin's ADD and returns its result, at the version the
// plugin answered with (the config's when it gave none).
func Add(ctx context.Context, plugin string, netconf []byte) (types.Result, error) {
	out, err := run(ctx, plugin, "ADD", netconf)
	if err != nil {
		return nil, err
	}
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("%s ADD: decode result: %w", plugin, err)
	}
	if v.CNIVersion == "" {
		if err := json.Unmarshal(netconf, &v); err != nil {
			return nil, fmt.Errorf("%s ADD: decode config version: %w", plugin, err)
		}
	}
	res, err := create.Create(v.CNIVersion, out)
	if err != nil {
		return nil, fmt.Errorf("%s ADD: result: %w", plugin, err)
	}
	return res, nil
}

// Del runs the plugin's DEL.
func Del(ctx context.Context, plugin string, netconf []byte) error {
	_, err := run(ctx, plugin, "DEL", netconf)
	return err
}

// Check runs the plugin's CHECK.
func Check(ctx context.Context, plugin string, netconf []byte) error {
	_, err := run(ctx, plugin, "CHECK", netconf)
	return err
}

// Status runs the plugin's STATUS.
func Status(ctx context.Context, plugin string, netconf []byte) error {
	_, err := run(ctx, plugin, "STATUS", netconf)
	return err
}

// GC runs the plugin's GC.
func GC(ctx context.Context, plugin string, netconf []byte) error {
	_, err := run(ctx, plugin, "GC", netconf)
	return err
}

// textBusyRetries bounds the retries while a plugin binary is being
// replaced (ETXTBSY), as libcni does.
const textBusyRetries = 5

func run(ctx context.Context, plugin, verb string, netconf []byte) ([]byte, error) {
	path, err := find(plugin, os.Getenv("CNI_PATH"))
	if err != nil {
		return nil, err
	}
	env := environ(verb)
	for try := 0; ; try++ {
		var stdout, stderr bytes.Buffer
		c := exec.CommandContext(ctx, path)
		c.Env = env
		c.Stdin = bytes.NewReader(netconf)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		if err == nil {
			if stderr.Len() > 0 {
				_, _ = io.Copy(os.Stderr, &stderr)
			}
			return stdout.Bytes(), nil
		}
		if strings.Contains(err.Error(), "text file busy") && try < textBusyRetries {
			time.Sleep(time.Second)
			continue
		}
		perr := pluginError(plugin, verb, err, stdout.Bytes(), stderr.Bytes())
		if stdout.Len() > 0 && stderr.Len() > 0 {
			// The error is made from stdout (the delegate's CNI
			// error); what it said on stderr (its log line, a panic)
			// goes to this plugin's stderr, which the runtime keeps,
			// rather than nowhere.
			_, _ = io.Copy(os.Stderr, &stderr)
		}
		return nil, perr
	}
}

// environ is this process's environment with CNI_COMMAND replaced.
func environ(verb string) []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_COMMAND=") {
			env = append(env, kv)
		}
	}
	return append(env, "CNI_COMMAND="+verb)
}

// find looks plugin up in the CNI_PATH directories. A type is a name, not a
// path: "../x" is refused.
func find(plugin, cniPath string) (string, error) {
	if plugin == "" || strings.ContainsRune(plugin, os.PathSeparator) {
		return "", fmt.Errorf("plugin type %q: want a plugin name without a path", plugin)
	}
	var dirs []string
	for _, d := range filepath.SplitList(cniPath) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return "", types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_PATH is empty: cannot find plugin "+plugin, "")
	}
	for _, d := range dirs {
		p := filepath.Join(d, plugin)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, dirs)
}

// pluginError is the delegate's CNI error from its stdout, or a clear one
// when it printed none.
func pluginError(plugin, verb string, err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 {
		if jerr := json.Unmarshal(stdout, &e); jerr == nil && (e.Code != 0 || e.Msg != "") {
			return &e
		}
		return fmt.Errorf("%s %s failed (%v) and printed no CNI error: %q", plugin, verb, err, stdout)
	}
	var ee *exec.ExitError
	if len(stderr) > 0 || errors.As(err, &ee) {
		return fmt.Errorf("%s %s failed: %v: %s", plugin, verb, err, bytes.TrimSpace(stderr))
	}
	return fmt.Errorf("%s %s: %w", plugin, verb, err)
}
