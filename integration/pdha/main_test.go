package pdha

import (
	"fmt"
	"os"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/netlab"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration/pdha tests need root: they create network namespaces, veths and "+
			"bridges and start etcd, BIRD, Kea, dhcpd and ipamd. Run `sudo make test` (or go test as root).")
		os.Exit(1)
	}
	code := m.Run()
	netlab.RemoveBinaries()
	os.Exit(code)
}
