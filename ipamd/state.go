package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

func state(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", ipamconf.DefaultSocket, "ipamd's unix socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ipamapi.NewClient(*socket).State(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NETWORK\tBLOCK\tNODE\tADDRESS\tCONTAINER\tIFNAME\n")
	for _, n := range st.Networks {
		if len(n.Blocks) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", n.Network)
		}
		for _, b := range n.Blocks {
			if len(b.Addrs) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\n", n.Network, b.Block, b.Node)
			}
			for _, a := range b.Addrs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Network, b.Block, b.Node, a.Addr, shortID(a.ContainerID), a.IfName)
			}
		}
	}
	return tw.Flush()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
