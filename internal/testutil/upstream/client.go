package upstream

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// dhclientScript records each event of dhclient's script in the file
// "events" beside it and puts a leased address on the interface (/128,
// without DAD), as a workload's DHCPv6 client does.
const dhclientScript = `#!/bin/sh
echo "reason=$reason addr=$new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search" >> "$(dirname "$0")/events"
case $reason in BOUND6|REBIND6|RENEW6)
	[ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/128" dev "$interface" nodad ;;
esac
exit 0
`

// DHCPClient is a workload's DHCPv6 client: ISC dhclient -6 in a netns
// (a client of the lab's Kea), asking for name servers and the domain
// search list.
type DHCPClient struct {
	dir string
	p   *proc
}

// StartDHCPClient starts `dhclient -6 -d` in nsName on ifName with the
// extra args (-S: stateless, information only). It runs until Stop or
// the end of the lab.
func (l *Lab) StartDHCPClient(nsName, ifName string, args ...string) (*DHCPClient, error) {
	dir, err := os.MkdirTemp(l.Dir, "dhclient-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(dhclientScript), 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "dhclient.conf")
	if err := os.WriteFile(conf, []byte("request dhcp6.name-servers, dhcp6.domain-search;\n"), 0o644); err != nil {
		return nil, err
	}
	argv := append([]string{"dhclient", "-6", "-d", "-v", "-cf", conf, "-sf", script,
		"-lf", filepath.Join(dir, "leases"), "-pf", filepath.Join(dir, "pid")}, args...)
	p, err := l.start(nsName, filepath.Join(dir, "dhclient.log"), nil, append(argv, ifName)...)
	if err != nil {
		return nil, err
	}
	return &DHCPClient{dir: dir, p: p}, nil
}

// Await waits up to timeout for the client's first event of reason
// (BOUND6, RENEW6 — dhclient -S reports its Reply so —, ...) and
// returns its line: "reason=R addr=A dns=D search=S".
func (c *DHCPClient) Await(reason string, timeout time.Duration) (string, error) {
	var line string
	if Poll(timeout, 50*time.Millisecond, func() bool {
		b, _ := os.ReadFile(filepath.Join(c.dir, "events"))
		for _, ln := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(ln, "reason="+reason+" ") {
				line = ln
				return true
			}
		}
		return false
	}) {
		return line, nil
	}
	ev, _ := os.ReadFile(filepath.Join(c.dir, "events"))
	return "", fmt.Errorf("no %s from dhclient within %s; its script's events:\n%s\nits log:\n%s",
		reason, timeout, ev, tailFile(filepath.Join(c.dir, "dhclient.log"), 3000))
}

// Stop kills the client (a workload stopping; it releases nothing).
func (c *DHCPClient) Stop() { c.p.kill() }

// RouterTo is the lab router that nsName's route to dst goes through
// (nil when it goes through none of them).
func (l *Lab) RouterTo(nsName string, dst netip.Addr) (*Router, error) {
	out, err := Exec(context.Background(), nsName, "ip", "-6", "route", "get", dst.String())
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] != "via" {
			continue
		}
		if a, err := netip.ParseAddr(f[i+1]); err == nil {
			return l.RouterByLinkLocal(a), nil
		}
	}
	return nil, nil
}
