package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// command is one client command of the CLI: its flags, the call it makes
// to ipamd over the socket, and how it shows the answer as a table (-o json
// prints the answer itself).
type command[T any] struct {
	name  string
	flags func(fs *flag.FlagSet) // extra flags
	call  func(ctx context.Context, c *ipamapi.Client) (T, error)
	show  func(w io.Writer, v T) error
	// check, when set, turns an answer into the command's exit status.
	check func(v T) error
}

// run parses the shared flags (--socket, -o) and the command's own, calls
// ipamd and prints the answer.
func (c command[T]) run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", ipamconf.DefaultSocket, "ipamd's unix socket")
	output := fs.String("o", "table", "output: table or json")
	if c.flags != nil {
		c.flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o: %q is neither table nor json", *output)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := c.call(ctx, ipamapi.NewClient(*socket))
	if err != nil {
		return err
	}
	if *output == "json" {
		err = printJSON(stdout, v)
	} else {
		err = c.show(stdout, v)
	}
	if err == nil && c.check != nil {
		err = c.check(v)
	}
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// state prints every network, block and address (the demo's view);
// --json is kept as a synonym of -o json.
func state(args []string, stdout, stderr io.Writer) error {
	for i, a := range args {
		if a == "--json" || a == "-json" {
			args = append(append(args[:i:i], "-o", "json"), args[i+1:]...)
			break
		}
	}
	return command[*ipamapi.State]{
		name: "state",
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.State, error) { return c.State(ctx) },
		show: func(w io.Writer, st *ipamapi.State) error {
			var rows [][]string
			for _, n := range st.Networks {
				if len(n.Blocks) == 0 {
					rows = append(rows, []string{n.Network, "-", "-", "-", "-", "-"})
				}
				for _, b := range n.Blocks {
					if len(b.Addrs) == 0 {
						rows = append(rows, []string{n.Network, b.Block, b.Node, "-", "-", "-"})
					}
					for _, a := range b.Addrs {
						rows = append(rows, []string{n.Network, b.Block, b.Node, a.Addr, ipamapi.ShortID(a.ContainerID), a.IfName})
					}
				}
			}
			return table(w, "NETWORK\tBLOCK\tNODE\tADDRESS\tCONTAINER\tIFNAME", rows)
		},
	}.run(args, stdout, stderr)
}

// status prints whether this ipamd can serve; it fails when etcd does not
// answer, so scripts and readiness probes can use its exit status.
func status(args []string, stdout, stderr io.Writer) error {
	return command[*ipamapi.Health]{
		name: "status",
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.Health, error) { return c.Health(ctx) },
		show: func(w io.Writer, h *ipamapi.Health) error {
			_, err := fmt.Fprintf(w, "node:    %s\nversion: %s\netcd:    %s\nnodes:   %s\n", h.Node, h.Version, h.Etcd, strings.Join(h.Nodes, " "))
			return err
		},
		check: func(h *ipamapi.Health) error {
			if h.Etcd != "ok" {
				return errors.New("etcd is not available")
			}
			return nil
		},
	}.run(args, stdout, stderr)
}

// poolRow and blockRow are what pools and blocks print.
type poolRow struct {
	Network string `json:"network"`
	Pool    string `json:"pool"`
	Blocks  int    `json:"blocks"`
	InUse   int    `json:"inUse"`
}

type blockRow struct {
	Block   string `json:"block"`
	Network string `json:"network"`
	Node    string `json:"node"`
	Gateway string `json:"gateway"`
	InUse   int    `json:"inUse"`
}

// pools prints each network's pool and its use on every node.
func pools(args []string, stdout, stderr io.Writer) error {
	return command[[]poolRow]{
		name: "pools",
		call: func(ctx context.Context, c *ipamapi.Client) ([]poolRow, error) {
			st, err := c.State(ctx)
			if err != nil {
				return nil, err
			}
			out := []poolRow{}
			for _, n := range st.Networks {
				r := poolRow{Network: n.Network, Pool: n.Pool, Blocks: len(n.Blocks)}
				for _, b := range n.Blocks {
					r.InUse += len(b.Addrs)
				}
				out = append(out, r)
			}
			return out, nil
		},
		show: func(w io.Writer, rs []poolRow) error {
			var rows [][]string
			for _, r := range rs {
				rows = append(rows, []string{r.Network, r.Pool, fmt.Sprint(r.Blocks), fmt.Sprint(r.InUse)})
			}
			return table(w, "NETWORK\tPOOL\tBLOCKS\tIN USE", rows)
		},
	}.run(args, stdout, stderr)
}

// blocks prints every claimed block, its owner and how full it is.
func blocks(args []string, stdout, stderr io.Writer) error {
	return command[[]blockRow]{
		name: "blocks",
		call: func(ctx context.Context, c *ipamapi.Client) ([]blockRow, error) {
			st, err := c.State(ctx)
			if err != nil {
				return nil, err
			}
			out := []blockRow{}
			for _, n := range st.Networks {
				for _, b := range n.Blocks {
					out = append(out, blockRow{Block: b.Block, Network: n.Network, Node: b.Node, Gateway: b.Gateway, InUse: len(b.Addrs)})
				}
			}
			return out, nil
		},
		show: func(w io.Writer, rs []blockRow) error {
			var rows [][]string
			for _, r := range rs {
				rows = append(rows, []string{r.Block, r.Network, r.Node, r.Gateway, fmt.Sprint(r.InUse)})
			}
			return table(w, "BLOCK\tNETWORK\tNODE\tGATEWAY\tIN USE", rows)
		},
	}.run(args, stdout, stderr)
}

// leases prints the attachments and their addresses.
func leases(args []string, stdout, stderr io.Writer) error {
	var network *string
	return command[[]ipamapi.Lease]{
		name:  "leases",
		flags: func(fs *flag.FlagSet) { network = fs.String("network", "", "only this network") },
		call: func(ctx context.Context, c *ipamapi.Client) ([]ipamapi.Lease, error) {
			return c.Leases(ctx, *network)
		},
		show: func(w io.Writer, ls []ipamapi.Lease) error {
			return table(w, leaseHeader, leaseRows(ls))
		},
	}.run(args, stdout, stderr)
}

const leaseHeader = "NETWORK\tCONTAINER\tIFNAME\tNODE\tADDRESSES\tCREATED"

func leaseRows(ls []ipamapi.Lease) [][]string {
	var rows [][]string
	for _, l := range ls {
		rows = append(rows, []string{l.Network, ipamapi.ShortID(l.ContainerID), l.IfName, l.Node, strings.Join(l.Addrs, ","), l.Created})
	}
	return rows
}

// gc releases this node's attachments whose network namespace is gone.
func gc(args []string, stdout, stderr io.Writer) error {
	var grace *time.Duration
	return command[*ipamapi.Released]{
		name:  "gc",
		flags: func(fs *flag.FlagSet) { grace = fs.Duration("grace", 0, "release only attachments older than this") },
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.Released, error) {
			return c.Reclaim(ctx, &ipamapi.AdminRequest{GraceSeconds: int(grace.Seconds())})
		},
		show: func(w io.Writer, r *ipamapi.Released) error {
			fmt.Fprintf(w, "released %d attachment(s) whose netns is gone\n", len(r.Released))
			if len(r.Released) == 0 {
				return nil
			}
			return table(w, leaseHeader, leaseRows(r.Released))
		},
	}.run(args, stdout, stderr)
}

// release releases one attachment by hand, as a DEL would.
func release(args []string, stdout, stderr io.Writer) error {
	var network, container, ifname *string
	return command[*ipamapi.Released]{
		name: "release",
		flags: func(fs *flag.FlagSet) {
			network = fs.String("network", "", "network name (required)")
			container = fs.String("container", "", "container ID (required)")
			ifname = fs.String("ifname", "eth0", "interface name")
		},
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.Released, error) {
			if *network == "" || *container == "" {
				return nil, errors.New("release: --network and --container are required")
			}
			return c.Release(ctx, &ipamapi.AdminRequest{Network: *network, ContainerID: *container, IfName: *ifname})
		},
		show: func(w io.Writer, r *ipamapi.Released) error {
			if len(r.Released) == 0 {
				_, err := fmt.Fprintf(w, "%s/%s/%s held no addresses\n", *network, *container, *ifname)
				return err
			}
			_, err := fmt.Fprintf(w, "released %s\n", strings.Join(r.Released[0].Addrs, ", "))
			return err
		},
	}.run(args, stdout, stderr)
}

// bgpCmd prints the BGP sessions and the announced prefixes.
func bgpCmd(args []string, stdout, stderr io.Writer) error {
	return command[*ipamapi.BGPState]{
		name: "bgp",
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.BGPState, error) { return c.BGP(ctx) },
		show: func(w io.Writer, st *ipamapi.BGPState) error {
			if !st.Enabled {
				_, err := fmt.Fprintln(w, "BGP is not configured (no bgp section in ipamd's config file)")
				return err
			}
			var rows [][]string
			for _, p := range st.Peers {
				rows = append(rows, []string{p.Address, fmt.Sprint(p.ASN), p.State, p.Uptime, fmt.Sprint(p.PrefixesSent), fmt.Sprint(p.PrefixesReceived), p.Message})
			}
			if err := table(w, "PEER\tASN\tSTATE\tUPTIME\tSENT\tRECEIVED\tNOTE", rows); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nannounced (%d):\n", len(st.Announced))
			for _, p := range st.Announced {
				fmt.Fprintln(w, "  "+p)
			}
			return nil
		},
	}.run(args, stdout, stderr)
}

// pdCmd prints the node's DHCPv6-PD binding; `ipamd pd release` gives the
// prefixes back to the server.
func pdCmd(args []string, stdout, stderr io.Writer) error {
	call := (*ipamapi.Client).PD
	if len(args) > 0 && args[0] == "release" {
		call, args = (*ipamapi.Client).PDRelease, args[1:]
	}
	return command[*ipamapi.PDState]{
		name: "pd",
		call: func(ctx context.Context, c *ipamapi.Client) (*ipamapi.PDState, error) { return call(c, ctx) },
		show: func(w io.Writer, st *ipamapi.PDState) error {
			if !st.Enabled {
				_, err := fmt.Fprintln(w, "prefix delegation is not configured (ipamd serve --pd-interface IFACE)")
				return err
			}
			if st.Mode == "cluster" {
				leader := "none"
				if st.Leader != "" {
					leader = st.Leader
					if !st.LeaderSince.IsZero() {
						leader += " (since " + st.LeaderSince.Local().Format(time.TimeOnly) + ")"
					}
				}
				fmt.Fprintf(w, "mode:      cluster  segment %s  leader %s  this node: %s\n", st.Segment, leader, orDash(st.Role))
			}
			fmt.Fprintf(w, "interface: %s\nserver:    %s %s\nclient:    DUID %s IAID %08x\nrenew in:  %s\nrebind in: %s\n",
				orDash(st.Interface), orDash(st.Server), st.ServerDUID, st.ClientDUID, st.IAID, orDash(st.RenewIn), orDash(st.RebindIn))
			if len(st.Prefixes) == 0 {
				_, err := fmt.Fprintln(w, "no prefix held")
				return err
			}
			var rows [][]string
			for _, p := range st.Prefixes {
				rows = append(rows, []string{p.Prefix, orDash(p.State), p.PreferredLeft, p.ValidLeft})
			}
			return table(w, "PREFIX\tSTATE\tPREFERRED LEFT\tVALID LEFT", rows)
		},
	}.run(args, stdout, stderr)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
