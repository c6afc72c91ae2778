package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// listNodes lists the cluster's nodes: liveness, epoch, what each holds.
func listNodes(args []string, stdout, stderr io.Writer) error {
	return command[[]ipamapi.NodeInfo]{
		name: "nodes",
		call: func(ctx context.Context, c *ipamapi.Client) ([]ipamapi.NodeInfo, error) { return c.Nodes(ctx) },
		show: func(w io.Writer, ns []ipamapi.NodeInfo) error { return nodesTable(w, ns, time.Now()) },
	}.run(args, stdout, stderr)
}

const nodesHeader = "NODE\tSTATE\tEPOCH\tBLOCKS\tATTACHMENTS\tLAST-SEEN\tNOTE"

// nodesTable prints ns, with last-seen times relative to now.
func nodesTable(w io.Writer, ns []ipamapi.NodeInfo, now time.Time) error {
	rows := make([][]string, 0, len(ns))
	for _, n := range ns {
		var notes []string
		if n.Local {
			notes = append(notes, "this node")
		}
		switch {
		case n.State == ipamapi.NodeUnregistered:
			notes = append(notes, "not registered: `ipamd node remove "+n.Name+"` releases what it holds")
		case n.Removed != nil && n.State == ipamapi.NodeRemoved:
			notes = append(notes, fmt.Sprintf("removed %s: %s", n.Removed.At, n.Removed.Reason))
		case n.Removed != nil:
			notes = append(notes, fmt.Sprintf("registered again after a removal at %s", n.Removed.At))
		}
		epoch := "-"
		if n.Epoch != 0 {
			epoch = fmt.Sprint(n.Epoch)
		}
		rows = append(rows, []string{n.Name, n.State, epoch, fmt.Sprint(n.Blocks), fmt.Sprint(n.Attachments),
			ago(n.LastSeen, now), orDash(strings.Join(notes, "; "))})
	}
	return table(w, nodesHeader, rows)
}

// ago shows an RFC 3339 time as the time since it ("12s ago"), or as it
// is if it does not parse.
func ago(ts string, now time.Time) string {
	if ts == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return ts
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return d.Round(time.Second).String() + " ago"
	case d < 48*time.Hour:
		return d.Round(time.Minute).String() + " ago"
	default:
		return t.UTC().Format(time.RFC3339)
	}
}

const nodeUsage = "usage: ipamd node remove NAME [--force] [--reason TEXT] [--socket PATH] [-o table|json]"

// nodeCmd is `ipamd node remove NAME`: decommission a node.
func nodeCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "remove" {
		if len(args) == 0 {
			return fmt.Errorf("node: missing subcommand\n%s", nodeUsage)
		}
		return fmt.Errorf("node: unknown subcommand %q (want remove)\n%s", args[0], nodeUsage)
	}
	// NAME may come before or after the flags (the flag package stops at
	// the first argument that is not one).
	flagArgs, names := splitArgs(args[1:], map[string]bool{"socket": true, "o": true, "reason": true})
	if len(names) != 1 {
		if len(names) == 0 {
			return fmt.Errorf("node remove: NAME missing\n%s", nodeUsage)
		}
		return fmt.Errorf("node remove: one NAME, got %d (%s)\n%s", len(names), strings.Join(names, " "), nodeUsage)
	}
	name := names[0]
	var force *bool
	var reason *string
	return command[*ipamapi.NodeRemoval]{
		name: "node remove",
		flags: func(fs *flag.FlagSet) {
			force = fs.Bool("force", false, "remove the node even while its ipamd is alive, or when it is the node of the ipamd answering")
			reason = fs.String("reason", "", "why, kept in the node's tombstone")
		},
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.NodeRemoval, error) {
			return c.RemoveNode(ctx, name, *force, *reason)
		},
		show: func(w io.Writer, r *ipamapi.NodeRemoval) error {
			_, err := fmt.Fprintln(w, r.Message)
			return err
		},
	}.run(flagArgs, stdout, stderr)
}

// splitArgs separates flags (and the values of those in valued) from
// positional arguments, wherever they stand; "--" ends the flags.
func splitArgs(args []string, valued map[string]bool) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(positional, args[i+1:]...)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && valued[name] && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	return flags, positional
}
