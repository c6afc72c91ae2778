package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/bench/internal/benchutil"
)

// buildMinimal builds a minimal static Go binary (fmt only, stripped) into
// dir and returns its path.
func buildMinimal(ctx context.Context, dir string) (string, error) {
	src := filepath.Join(dir, "minimal.go")
	if err := os.WriteFile(src, []byte(`package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Println(os.Args[1])
	}
}
`), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "minimal")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build minimal binary: %v: %s", err, out)
	}
	return bin, nil
}

// execTimes execs bin n times with env and stdin, as a runtime execs a plugin.
func execTimes(ctx context.Context, bin string, env []string, stdin []byte, n int) (benchutil.Durs, error) {
	var ds benchutil.Durs
	for i := 0; i < n; i++ {
		_, d, err := execPlugin(ctx, bin, env, stdin)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// bareNetlink does, in process, the kernel work of one IPv6 attachment and
// nothing else: veth with the container end created directly in the netns
// as eth0, host end on the bridge and up, address with IFA_F_NODAD, lo and
// eth0 up, default route via the gateway. DEL deletes the host veth.
type bareNetlink struct {
	bridge *netlink.Bridge
	gw     net.IP
	pfx    int
}

func newBareNetlink(name string, gwCIDR string) (*bareNetlink, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	addr, err := netlink.ParseAddr(gwCIDR)
	if err != nil {
		return nil, err
	}
	addr.Flags = unix.IFA_F_NODAD
	if err := netlink.AddrAdd(br, addr); err != nil {
		return nil, fmt.Errorf("gateway on %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	ones, _ := addr.Mask.Size()
	return &bareNetlink{bridge: l.(*netlink.Bridge), gw: addr.IP, pfx: ones}, nil
}

func (b *bareNetlink) hostName(c *container) string { return "fl" + c.id[:12] }

func (b *bareNetlink) add(_ context.Context, c *container, i int) (time.Duration, error) {
	t := time.Now()
	netns, err := ns.GetNS(c.netns)
	if err != nil {
		return 0, err
	}
	defer netns.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: b.hostName(c)},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(netns.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return 0, fmt.Errorf("veth: %w", err)
	}
	if err := netlink.LinkSetMaster(veth, b.bridge); err != nil {
		return 0, fmt.Errorf("bridge port: %w", err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return 0, err
	}
	ip := make(net.IP, 16)
	copy(ip, b.gw)
	ip[14], ip[15] = byte((i+2)>>8), byte(i+2)
	err = netns.Do(func(ns.NetNS) error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(b.pfx, 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(eth, a); err != nil {
			return fmt.Errorf("address: %w", err)
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: b.gw,
			Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}})
	})
	return time.Since(t), err
}

func (b *bareNetlink) del(c *container) (time.Duration, error) {
	t := time.Now()
	err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: b.hostName(c)}})
	return time.Since(t), err
}

// floorNetlink runs n bare attachments par at a time, then their deletion.
func floorNetlink(ctx context.Context, r *benchutil.Run, b *bareNetlink, tag string, n, par int) (*batch, error) {
	cs := make([]*container, n)
	for i := range cs {
		p, err := namespaces.create(r.Name(fmt.Sprintf("-%s-%d", tag, i)))
		if err != nil {
			return nil, err
		}
		cs[i] = newContainer(tag, p)
	}
	defer func() {
		for _, c := range cs {
			if c != nil {
				namespaces.remove(c.netns)
			}
		}
	}()
	bt := &batch{add: make(benchutil.Durs, n), del: make(benchutil.Durs, n)}
	var err error
	bt.addWall, err = benchutil.Parallel(ctx, n, par, func(i int) error {
		d, err := b.add(ctx, cs[i], i)
		bt.add[i] = d
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bare netlink ADD: %w", err)
	}
	bt.delWall, err = benchutil.Parallel(ctx, n, par, func(i int) error {
		d, err := b.del(cs[i])
		bt.del[i] = d
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bare netlink DEL: %w", err)
	}
	return bt, nil
}

// etcdTxns commits n create-if-absent transactions (one key each, as an
// allocation does) against the embedded etcd, sequentially.
func etcdTxns(ctx context.Context, endpoint, prefix string, n int) (benchutil.Durs, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var ds benchutil.Durs
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("%s/%d", prefix, i)
		t := time.Now()
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, `{"network":"floor","containerID":"x","ifName":"eth0"}`)).Commit()
		d := time.Since(t)
		if err != nil {
			return nil, err
		}
		if !resp.Succeeded {
			return nil, fmt.Errorf("etcd txn on %s: key exists", key)
		}
		ds = append(ds, d)
	}
	// Leave ipamd's store as it was.
	cli.Delete(ctx, prefix+"/", clientv3.WithPrefix())
	return ds, nil
}
