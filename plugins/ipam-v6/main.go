// Command ipam-v6 is v6cni's CNI IPAM plugin for cluster-wide pools
// (ipam.ranges). It is a thin client of ipamd (package ipamplugin): all
// address state lives in ipamd and etcd; this binary links neither.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/v6cni/v6cni/pkg/plugin/ipamplugin"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	skel.PluginMainFuncs(ipamplugin.Funcs("ipam-v6"), cniversion.All,
		"ipam-v6 "+version+": IPv6-first IPAM from cluster-wide pools (v6cni)")
}
