// Command ipamd is v6cni's per-node daemon: it owns all address state (in
// etcd, embedded or external), claims blocks for its node and serves the
// IPAM plugins on a root-only unix socket.
//
//	ipamd [serve] [flags]      run the daemon (the default)
//	ipamd status|pools|blocks|leases|state   inspect (-o json for scripts)
//	ipamd gc | release                        release stale or chosen attachments
//	ipamd nodes | node remove NAME            the cluster's nodes; decommission one
//	ipamd version                             print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	if os.Getenv("GOGC") == "" {
		// ipamd's live heap is mostly the embedded etcd's index, which
		// grows with the leases: collecting at +50% instead of +100%
		// keeps a node with 100k leases near 150 MB for a little CPU.
		debug.SetGCPercent(50)
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ipamd:", err)
		}
		code := 1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode() // `ipamd check`: 1 = problems, 2 = could not check
		}
		os.Exit(code)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "state":
		return state(args, stdout, stderr)
	case "status":
		return status(args, stdout, stderr)
	case "pools":
		return pools(args, stdout, stderr)
	case "blocks":
		return blocks(args, stdout, stderr)
	case "leases":
		return leases(args, stdout, stderr)
	case "gc":
		return gc(args, stdout, stderr)
	case "release":
		return release(args, stdout, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "nodes":
		return listNodes(args, stdout, stderr)
	case "node":
		return nodeCmd(args, stdout, stderr)
	case "bgp":
		return bgpCmd(args, stdout, stderr)
	case "pd":
		return pdCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "ipamd", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

const usage = `usage:
  ipamd [serve] [flags]     run the daemon (ipamd serve -h for flags)
  ipamd status              can this ipamd serve? (node, version, etcd)
  ipamd pools               pools and their use
  ipamd blocks              blocks, owners and use
  ipamd leases [--network N]  attachments and their addresses
  ipamd state               every network, block and address
  ipamd gc [--grace D]      release attachments whose netns is gone
  ipamd release --network N --container ID [--ifname IF]
  ipamd check               check the cluster's state and this node (exit 1: problems, 2: could not check)
  ipamd nodes               the cluster's nodes: state, epoch, blocks, attachments
  ipamd node remove NAME [--force] [--reason TEXT]  decommission a node
  ipamd bgp                 BGP sessions and announced prefixes
  ipamd pd [release]        the DHCPv6-PD binding (release: give it back)
  ipamd version             print the version
Client commands take --socket PATH and -o table|json.
`

func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
}
