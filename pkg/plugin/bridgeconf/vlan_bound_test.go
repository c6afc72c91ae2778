package bridgeconf

import (
	"testing"

	"github.com/v6cni/v6cni/pkg/link"
)

// TestVLANBoundIsLinks: the config accepts exactly the VLAN IDs the kernel
// side accepts; the bound is written twice only to keep netlink out of the
// IPAM plugins.
func TestVLANBoundIsLinks(t *testing.T) {
	if MaxVLAN != link.MaxVLAN {
		t.Fatalf("bridgeconf.MaxVLAN %d, link.MaxVLAN %d", MaxVLAN, link.MaxVLAN)
	}
}
