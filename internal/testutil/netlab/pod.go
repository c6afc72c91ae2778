package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// NetworkName is the CNI network every node attaches its pods to; Bridge
// is its bridge in each node's netns (each node has its own netns, so the
// name is the same everywhere).
const (
	NetworkName = "netlab"
	Bridge      = "cni0"
)

// PDNetwork is the pd-ipam network of AddPDPod with subnetId subnetID,
// and its bridge on every node: addresses from the delegated prefix
// (Options.PD). One network per subnetId, as pd-ipam networks are.
func PDNetwork(subnetID int) (name, bridge string) {
	return "netlab-pd" + strconv.Itoa(subnetID), "cnipd" + strconv.Itoa(subnetID)
}

// Pod is a container on a node: a netns whose "eth0" bridge-v6 attached
// to the node's bridge, with the addresses ipamd gave it.
type Pod struct {
	// ID is the CNI container ID, NS the pod's netns.
	ID, NS string
	Node   *Node
	// Addrs are the addresses of the ADD result (one per family).
	Addrs []netip.Addr
	// result is ADD's result, CHECK's prevResult.
	result json.RawMessage
	// pd: the pod is on the pd-ipam network, subnetID its subnetId, mode
	// bridge-v6's ipv6Mode ("": the key left out, static).
	pd       bool
	subnetID int
	mode     string
}

// netConf is the bridge-v6 configuration every node uses: the same pools
// everywhere (one cluster), served by the node's own ipamd; prevResult
// when given.
func (n *Node) netConf(p *Pod, prevResult json.RawMessage) []byte {
	if p.pd {
		return n.pdNetConf(p.subnetID, p.mode, prevResult)
	}
	l := n.lab
	ranges := []any{[]any{map[string]any{"subnet": l.Pool6.String(), "blockSize": l.Opts.BlockSize6}}}
	if l.Opts.IPv4 {
		ranges = append(ranges, []any{map[string]any{"subnet": l.Pool4.String(), "blockSize": l.Opts.BlockSize4}})
	}
	conf := map[string]any{
		"cniVersion":       "1.1.0",
		"name":             NetworkName,
		"type":             "bridge-v6",
		"bridge":           Bridge,
		"isGateway":        true,
		"isDefaultGateway": true,
		// No NAT anywhere: pod addresses are routed as they are.
		"ipMasq": false,
		"ipam":   map[string]any{"type": "ipam-v6", "socket": n.Socket, "ranges": ranges},
	}
	if prevResult != nil {
		conf["prevResult"] = prevResult
	}
	b, _ := json.Marshal(conf)
	return b
}

// cni runs bridge-v6 (which execs ipam-v6 from CNI_PATH) inside the node's
// netns, as a runtime on that node would, and returns its stdout.
func (n *Node) cni(ctx context.Context, command string, p *Pod) ([]byte, error) {
	bin := n.lab.Bin
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, filepath.Join(bin, "bridge-v6"))
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+p.ID,
		"CNI_NETNS=/run/netns/"+p.NS,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+bin,
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME="+p.ID,
	)
	var prev json.RawMessage
	if command == "CHECK" {
		prev = p.result
	}
	cmd.Stdin = bytes.NewReader(n.netConf(p, prev))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bridge-v6 %s %s on %s: %w: %s%s", command, p.ID, n.Name, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// pdNetConf is the bridge-v6 configuration of the pd-ipam network:
// subnetId subnetID of the delegated prefix, served by the node's ipamd,
// with ipv6Mode mode ("": the key left out).
func (n *Node) pdNetConf(subnetID int, mode string, prevResult json.RawMessage) []byte {
	name, bridge := PDNetwork(subnetID)
	conf := map[string]any{
		"cniVersion":       "1.1.0",
		"name":             name,
		"type":             "bridge-v6",
		"bridge":           bridge,
		"isGateway":        true,
		"isDefaultGateway": true,
		"ipMasq":           false,
		"ipam":             map[string]any{"type": "pd-ipam", "socket": n.Socket, "subnetId": subnetID},
	}
	if mode != "" {
		conf["ipv6Mode"] = mode
	}
	if prevResult != nil {
		conf["prevResult"] = prevResult
	}
	b, _ := json.Marshal(conf)
	return b
}

// AddPod creates a pod netns and runs ADD for it. The pod's netns is
// removed when the lab ends; a failed ADD removes it at once.
func (n *Node) AddPod(ctx context.Context) (*Pod, error) {
	return n.addPod(ctx, false, 0, "")
}

// AddPDPod is AddPod on the pd-ipam network of subnetId subnetID
// (PDNetwork). While the node's ipamd holds no
// prefix ADD fails with code 11 (try again later).
func (n *Node) AddPDPod(ctx context.Context, subnetID int) (*Pod, error) {
	return n.AddPDPodMode(ctx, subnetID, "")
}

// AddPDPodMode is AddPDPod with bridge-v6's ipv6Mode mode: "static",
// "slaac", "dhcpv6-stateless" or "dhcpv6-stateful" ("" leaves the key
// out: static). Every pod of one subnetId shares a bridge, so they should
// share a mode. In slaac and dhcpv6-stateless ADD waits until the pod's
// kernel formed its address from the RAs ipamd sends on the bridge.
func (n *Node) AddPDPodMode(ctx context.Context, subnetID int, mode string) (*Pod, error) {
	return n.addPod(ctx, true, subnetID, mode)
}

// Mode is the pod's ipv6Mode as its network configuration says it (""
// when the key is left out: static).
func (p *Pod) Mode() string { return p.mode }

func (n *Node) addPod(ctx context.Context, pd bool, subnetID int, mode string) (*Pod, error) {
	l := n.lab
	k := l.podSeq.Add(1)
	p := &Pod{ID: fmt.Sprintf("nl-%s-%d", l.ID, k), NS: l.netnsName("p" + strconv.FormatInt(k, 10)), Node: n, pd: pd, subnetID: subnetID, mode: mode}
	l.track(p.NS)
	if err := createNetns(p.NS); err != nil {
		return nil, err
	}
	out, err := n.cni(ctx, "ADD", p)
	if err != nil {
		_ = p.remove()
		return nil, err
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		_ = p.remove()
		return nil, fmt.Errorf("ADD %s on %s: result: %w: %s", p.ID, n.Name, err, out)
	}
	for _, ip := range res.IPs {
		pfx, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			_ = p.remove()
			return nil, fmt.Errorf("ADD %s on %s: result address %q: %w", p.ID, n.Name, ip.Address, err)
		}
		p.Addrs = append(p.Addrs, pfx.Addr())
	}
	p.result = out
	n.mu.Lock()
	n.pods = append(n.pods, p)
	n.mu.Unlock()
	return p, nil
}

// Del runs DEL for the pod and removes its netns.
func (p *Pod) Del(ctx context.Context) error {
	if _, err := p.Node.cni(ctx, "DEL", p); err != nil {
		return err
	}
	n := p.Node
	n.mu.Lock()
	for i, q := range n.pods {
		if q == p {
			n.pods = append(n.pods[:i], n.pods[i+1:]...)
			break
		}
	}
	n.mu.Unlock()
	return p.remove()
}

// Check runs CHECK for the pod.
func (p *Pod) Check(ctx context.Context) error {
	_, err := p.Node.cni(ctx, "CHECK", p)
	return err
}

// Addr is the pod's address of one family (4 or 6); the zero Addr if it
// has none.
func (p *Pod) Addr(family int) netip.Addr {
	for _, a := range p.Addrs {
		if a.Is4() == (family == 4) {
			return a
		}
	}
	return netip.Addr{}
}

// Exec runs a command inside the pod's netns.
func (p *Pod) Exec(ctx context.Context, args ...string) ([]byte, error) {
	return Exec(ctx, p.NS, args...)
}

var ttlRE = regexp.MustCompile(`(?:ttl|hlim)=(\d+)`)

// Ping pings dst from the pod until one reply arrives (at most 5 s: the
// first packet may wait for neighbour discovery on three links) and
// returns the reply's TTL / hop limit. A reply from a pod on another node
// that crossed its node, the router and this pod's node arrives with 61
// (sent with 64).
func (p *Pod) Ping(ctx context.Context, dst netip.Addr) (ttl int, err error) {
	out, err := p.Exec(ctx, "ping", "-n", "-c", "1", "-w", "5", dst.String())
	if err != nil {
		return 0, fmt.Errorf("ping %s from pod %s on %s: %w", dst, p.ID, p.Node.Name, err)
	}
	m := ttlRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from pod %s: no ttl in %q", dst, p.ID, out)
	}
	return strconv.Atoi(string(m[1]))
}

// remove deletes the pod's netns (tolerating its absence).
func (p *Pod) remove() error {
	out, err := exec.Command("ip", "netns", "del", p.NS).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", p.NS, err, out)
	}
	return nil
}

// Status runs the CNI STATUS verb on the node, as a runtime does to set
// NetworkReady; the error carries the plugin's CNI error (code and msg).
func (n *Node) Status(ctx context.Context) error {
	_, err := n.cni(ctx, "STATUS", &Pod{})
	return err
}

// Pods are the node's pods that were added and not deleted, oldest first.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}
