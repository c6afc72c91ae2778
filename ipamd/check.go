package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// Exit codes of `ipamd check`, for scripts and tests.
const (
	checkClean    = 0
	checkProblems = 1
	// checkFailed: the check could not run (ipamd or etcd unreachable, a
	// bad flag): nothing is known about the cluster's state.
	checkFailed = 2
)

// exitError carries a command's exit status to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the status main exits with.
func (e *exitError) ExitCode() int { return e.code }

// check prints every broken invariant of the cluster's state, grouped by
// the node it belongs to, and this node's own problems (netns gone,
// gateways): the local ipamd runs the whole check (package nodecheck says
// why it is not the CLI). It exits 1 when there is a problem and 2 when the
// check could not run, so scripts and tests can assert "ipamd check" is
// clean.
func check(args []string, stdout, stderr io.Writer) error {
	err := command[*ipamapi.Consistency]{
		name: "check",
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.Consistency, error) {
			return c.Consistency(ctx)
		},
		show: showCheck,
		check: func(r *ipamapi.Consistency) error {
			if n := len(r.Problems); n > 0 {
				return &exitError{checkProblems, fmt.Errorf("%d problem(s) in the cluster's state", n)}
			}
			return nil
		},
	}.run(args, stdout, stderr)
	var ee *exitError
	if err != nil && !errors.As(err, &ee) {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{checkFailed, err}
		}
		return &exitError{checkFailed, fmt.Errorf("check could not run: %w", err)}
	}
	return err
}

// showCheck prints one group per node (its state, then its problems), the
// problems that belong to no node, and a summary line.
func showCheck(w io.Writer, r *ipamapi.Consistency) error {
	byNode := map[string][]ipamapi.Problem{}
	for _, p := range r.Problems {
		byNode[p.Node] = append(byNode[p.Node], p)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	problems := func(ps []ipamapi.Problem) {
		if len(ps) == 0 {
			fmt.Fprintln(tw, "  ok")
			return
		}
		fmt.Fprintln(tw, "  PROBLEM\tKEY\tDETAIL")
		for _, p := range ps {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Kind, p.Key, p.Msg)
		}
	}
	seen := map[string]bool{}
	for _, n := range r.Nodes {
		seen[n.Name] = true
		local := ""
		if n.Name == r.Node {
			local = ", this node"
		}
		epoch := ""
		if n.Epoch != 0 {
			epoch = fmt.Sprintf(", epoch %d", n.Epoch)
		}
		fmt.Fprintf(tw, "node %s: %s%s%s, %d block(s), %d attachment(s)\n", n.Name, n.State, local, epoch, n.Blocks, n.Attachments)
		if n.Note != "" {
			fmt.Fprintf(tw, "  (%s)\n", n.Note)
		}
		problems(byNode[n.Name])
	}
	// Problems of a node the node list lacks (none today) and of no node.
	for _, name := range slices.Sorted(maps.Keys(byNode)) {
		if seen[name] {
			continue
		}
		if name == "" {
			fmt.Fprintln(tw, "no node:")
		} else {
			fmt.Fprintf(tw, "node %s:\n", name)
		}
		problems(byNode[name])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "checked %d node(s), %d block(s), %d address(es), %d handle(s), %d sticky record(s) at revision %d (local checks on node %s): ",
		len(r.Nodes), r.Blocks, r.Addrs, r.Handles, r.Stickies, r.Revision, r.Node)
	if len(r.Problems) == 0 {
		_, err := fmt.Fprintln(w, "consistent")
		return err
	}
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
	}
	nodes, where := len(byNode), ""
	if none := len(byNode[""]); none > 0 {
		nodes--
		where = fmt.Sprintf(" and %d of no node", none)
	}
	_, err := fmt.Fprintf(w, "%d problem(s) on %d node(s)%s: %s\n", len(r.Problems), nodes, where, strings.Join(parts, ", "))
	return err
}
