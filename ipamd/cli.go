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

// cliFlags are the flags every client command shares.
type cliFlags struct {
	fs     *flag.FlagSet
	socket *string
	output *string
}

func newCLIFlags(name string, stderr io.Writer) *cliFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &cliFlags{fs: fs}
	c.socket = fs.String("socket", ipamconf.DefaultSocket, "ipamd's unix socket")
	c.output = fs.String("o", "table", "output: table or json")
	return c
}

func (c *cliFlags) parse(args []string) (*ipamapi.Client, error) {
	if err := c.fs.Parse(args); err != nil {
		return nil, err
	}
	if *c.output != "table" && *c.output != "json" {
		return nil, fmt.Errorf("-o: %q is neither table nor json", *c.output)
	}
	return ipamapi.NewClient(*c.socket), nil
}

func (c *cliFlags) json() bool { return *c.output == "json" }

func cliContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
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

// state prints every network, block and address (the demo's view).
func state(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("state", stderr)
	asJSON := f.fs.Bool("json", false, "print JSON (same as -o json)")
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	st, err := cli.State(ctx)
	if err != nil {
		return err
	}
	if *asJSON || f.json() {
		return printJSON(stdout, st)
	}
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
				rows = append(rows, []string{n.Network, b.Block, b.Node, a.Addr, shortID(a.ContainerID), a.IfName})
			}
		}
	}
	return table(stdout, "NETWORK\tBLOCK\tNODE\tADDRESS\tCONTAINER\tIFNAME", rows)
}

// status prints whether this ipamd can serve, and a summary per network.
func status(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("status", stderr)
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	h, err := cli.Health(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		if err := printJSON(stdout, h); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "node:    %s\nversion: %s\netcd:    %s\nnodes:   %s\n", h.Node, h.Version, h.Etcd, strings.Join(h.Nodes, " "))
	}
	if h.Etcd != "ok" {
		return errors.New("etcd is not available")
	}
	return nil
}

// pools prints each network's pool and its use on every node.
func pools(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("pools", stderr)
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	st, err := cli.State(ctx)
	if err != nil {
		return err
	}
	type poolRow struct {
		Network string `json:"network"`
		Pool    string `json:"pool"`
		Blocks  int    `json:"blocks"`
		InUse   int    `json:"inUse"`
	}
	var out []poolRow
	var rows [][]string
	for _, n := range st.Networks {
		r := poolRow{Network: n.Network, Pool: n.Pool, Blocks: len(n.Blocks)}
		for _, b := range n.Blocks {
			r.InUse += len(b.Addrs)
		}
		out = append(out, r)
		rows = append(rows, []string{r.Network, r.Pool, fmt.Sprint(r.Blocks), fmt.Sprint(r.InUse)})
	}
	if f.json() {
		return printJSON(stdout, out)
	}
	return table(stdout, "NETWORK\tPOOL\tBLOCKS\tIN USE", rows)
}

// blocks prints every claimed block, its owner and how full it is.
func blocks(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("blocks", stderr)
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	st, err := cli.State(ctx)
	if err != nil {
		return err
	}
	type blockRow struct {
		Block   string `json:"block"`
		Network string `json:"network"`
		Node    string `json:"node"`
		Gateway string `json:"gateway"`
		InUse   int    `json:"inUse"`
	}
	var out []blockRow
	var rows [][]string
	for _, n := range st.Networks {
		for _, b := range n.Blocks {
			r := blockRow{Block: b.Block, Network: n.Network, Node: b.Node, Gateway: b.Gateway, InUse: len(b.Addrs)}
			out = append(out, r)
			rows = append(rows, []string{r.Block, r.Network, r.Node, r.Gateway, fmt.Sprint(r.InUse)})
		}
	}
	if f.json() {
		return printJSON(stdout, out)
	}
	return table(stdout, "BLOCK\tNETWORK\tNODE\tGATEWAY\tIN USE", rows)
}

// leases prints the attachments and their addresses.
func leases(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("leases", stderr)
	network := f.fs.String("network", "", "only this network")
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	ls, err := cli.Leases(ctx, *network)
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(stdout, ls)
	}
	return table(stdout, "NETWORK\tCONTAINER\tIFNAME\tNODE\tADDRESSES\tCREATED", leaseRows(ls))
}

func leaseRows(ls []ipamapi.Lease) [][]string {
	var rows [][]string
	for _, l := range ls {
		rows = append(rows, []string{l.Network, shortID(l.ContainerID), l.IfName, l.Node, strings.Join(l.Addrs, ","), l.Created})
	}
	return rows
}

// gc releases this node's attachments whose network namespace is gone.
func gc(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("gc", stderr)
	grace := f.fs.Duration("grace", 0, "release only attachments older than this")
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	r, err := cli.Reclaim(ctx, &ipamapi.AdminRequest{GraceSeconds: int(grace.Seconds())})
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(stdout, r)
	}
	fmt.Fprintf(stdout, "released %d attachment(s) whose netns is gone\n", len(r.Released))
	if len(r.Released) == 0 {
		return nil
	}
	return table(stdout, "NETWORK\tCONTAINER\tIFNAME\tNODE\tADDRESSES\tCREATED", leaseRows(r.Released))
}

// release releases one attachment by hand, as a DEL would.
func release(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("release", stderr)
	network := f.fs.String("network", "", "network name (required)")
	container := f.fs.String("container", "", "container ID (required)")
	ifname := f.fs.String("ifname", "eth0", "interface name")
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	if *network == "" || *container == "" {
		return errors.New("release: --network and --container are required")
	}
	ctx, cancel := cliContext()
	defer cancel()
	r, err := cli.Release(ctx, &ipamapi.AdminRequest{Network: *network, ContainerID: *container, IfName: *ifname})
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(stdout, r)
	}
	if len(r.Released) == 0 {
		fmt.Fprintf(stdout, "%s/%s/%s held no addresses\n", *network, *container, *ifname)
		return nil
	}
	fmt.Fprintf(stdout, "released %s\n", strings.Join(r.Released[0].Addrs, ", "))
	return nil
}

// shortID shortens the 64-hex container IDs runtimes use, as docker ps
// does; other IDs are shown whole.
func shortID(id string) string {
	if len(id) == 64 {
		return id[:12]
	}
	return id
}

// bgpCmd prints the BGP sessions and the announced prefixes.
func bgpCmd(args []string, stdout, stderr io.Writer) error {
	f := newCLIFlags("bgp", stderr)
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	st, err := cli.BGP(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(stdout, st)
	}
	if !st.Enabled {
		fmt.Fprintln(stdout, "BGP is not configured (no bgp section in ipamd's config file)")
		return nil
	}
	var rows [][]string
	for _, p := range st.Peers {
		rows = append(rows, []string{p.Address, fmt.Sprint(p.ASN), p.State, p.Uptime, fmt.Sprint(p.PrefixesSent), fmt.Sprint(p.PrefixesReceived), p.Message})
	}
	if err := table(stdout, "PEER\tASN\tSTATE\tUPTIME\tSENT\tRECEIVED\tNOTE", rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nannounced (%d):\n", len(st.Announced))
	for _, p := range st.Announced {
		fmt.Fprintln(stdout, "  "+p)
	}
	return nil
}

// pdCmd prints the node's DHCPv6-PD binding; `ipamd pd release` gives the
// prefixes back to the server.
func pdCmd(args []string, stdout, stderr io.Writer) error {
	releaseIt := len(args) > 0 && args[0] == "release"
	if releaseIt {
		args = args[1:]
	}
	f := newCLIFlags("pd", stderr)
	cli, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := cliContext()
	defer cancel()
	var st *ipamapi.PDState
	if releaseIt {
		st, err = cli.PDRelease(ctx)
	} else {
		st, err = cli.PD(ctx)
	}
	if err != nil {
		return err
	}
	if f.json() {
		return printJSON(stdout, st)
	}
	if !st.Enabled {
		fmt.Fprintln(stdout, "prefix delegation is not configured (ipamd serve --pd-interface IFACE)")
		return nil
	}
	fmt.Fprintf(stdout, "interface: %s\nserver:    %s %s\nclient:    DUID %s IAID %08x\nrenew in:  %s\nrebind in: %s\n",
		st.Interface, orDash(st.Server), st.ServerDUID, st.ClientDUID, st.IAID, orDash(st.RenewIn), orDash(st.RebindIn))
	var rows [][]string
	for _, p := range st.Prefixes {
		rows = append(rows, []string{p.Prefix, p.PreferredLeft, p.ValidLeft})
	}
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "no prefix held")
		return nil
	}
	return table(stdout, "PREFIX\tPREFERRED LEFT\tVALID LEFT", rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
