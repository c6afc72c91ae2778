// Command pd-ipam is v6cni's CNI IPAM plugin for addresses from the prefix
// this node obtained by DHCPv6 prefix delegation (ipam.subnetId picks the
// /64). It is a thin client of ipamd (package ipamplugin), which runs the
// PD client; this binary links neither etcd nor gRPC.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	skel.PluginMainFuncs(ipamplugin.Funcs("pd-ipam"), cniversion.All,
		"pd-ipam "+version+": addresses from the node's DHCPv6-delegated prefix (v6cni)")
}
