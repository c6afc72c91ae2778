package upstream

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Kea is kea-dhcp6 on the segment host: stateful addresses from
// PoolStart to PoolEnd, the DNS server and the search domain.
type Kea struct {
	PoolStart, PoolEnd netip.Addr
	// LeasePath is its memfile (CSV).
	LeasePath string
	logPath   string
	p         *proc
}

func (l *Lab) startKea() (*Kea, error) {
	if _, err := exec.LookPath("kea-dhcp6"); err != nil {
		return nil, fmt.Errorf("upstream: kea-dhcp6 not found: run scripts/install-deps.sh as root (%v)", err)
	}
	k := &Kea{PoolStart: hostAddr(l.Config.Prefix, 0x1000), PoolEnd: hostAddr(l.Config.Prefix, 0x1fff),
		LeasePath: filepath.Join(l.Dir, "kea-leases6.csv"), logPath: filepath.Join(l.Dir, "kea.log")}
	ifn := l.segIf("eth0")
	opts := fmt.Sprintf(`{"name": "dns-servers", "data": %q}`, l.DNS.String())
	if l.Config.SearchDomain != "" {
		opts += fmt.Sprintf(`, {"name": "domain-search", "data": %q}`, l.Config.SearchDomain)
	}
	conf := fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q], "service-sockets-max-retries": 40, "service-sockets-retry-wait-time": 250},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "7570737472", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "renew-timer": 1000, "rebind-timer": 2000, "preferred-lifetime": 3000, "valid-lifetime": 4000,
  "option-data": [%s],
  "subnet6": [{"id": 1, "subnet": %q, "interface": %q,
    "pools": [{"pool": "%s-%s"}]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}
`, ifn, l.Dir, k.LeasePath, opts, l.Config.Prefix, ifn, k.PoolStart, k.PoolEnd)
	confPath := filepath.Join(l.Dir, "kea.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	var err error
	k.p, err = l.start(l.SegmentNS, k.logPath, []string{"KEA_PIDFILE_DIR=" + l.Dir, "KEA_LOCKFILE_DIR=" + l.Dir},
		"kea-dhcp6", "-c", confPath)
	if err != nil {
		return nil, err
	}
	if !Poll(15*time.Second, 50*time.Millisecond, func() bool {
		if k.p.exited() {
			return true
		}
		b, _ := os.ReadFile(k.logPath)
		return strings.Contains(string(b), "DHCP6_STARTED")
	}) || k.p.exited() {
		return nil, fmt.Errorf("upstream: kea-dhcp6 not started after 15s (exited: %t):\n%s", k.p.exited(), tailFile(k.logPath, 3000))
	}
	return k, nil
}

// Leases is Kea's lease file (CSV, header first).
func (k *Kea) Leases() (string, error) {
	b, err := os.ReadFile(k.LeasePath)
	return string(b), err
}
