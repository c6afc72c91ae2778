package upstream

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Kea is kea-dhcp6 on the segment host: stateful addresses from
// PoolStart to PoolEnd, the DNS server and the search domain, and
// delegated prefixes of Config.PDPool when set.
type Kea struct {
	PoolStart, PoolEnd netip.Addr
	// LeasePath is its memfile (CSV).
	LeasePath string
	logPath   string
	confPath  string
	p         *proc

	// conf builds the config with the reservations so far (Reserve).
	conf         func(reservations string) string
	reservations []string
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
	timers := `"renew-timer": 1000, "rebind-timer": 2000, "preferred-lifetime": 3000, "valid-lifetime": 4000`
	pdPools := ""
	if p := l.Config.PDPool; p.IsValid() {
		timers = `"renew-timer": 3, "rebind-timer": 6, "preferred-lifetime": 30, "valid-lifetime": 60`
		pdPools = fmt.Sprintf(`,
    "pd-pools": [{"prefix": %q, "prefix-len": %d, "delegated-len": %d}]`, p.Masked().Addr(), p.Bits(), PDDelegatedLength)
	}
	k.conf = func(reservations string) string {
		return fmt.Sprintf(`{"Dhcp6": {
  "interfaces-config": {"interfaces": [%q], "service-sockets-max-retries": 40, "service-sockets-retry-wait-time": 250},
  "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "7570737472", "persist": false},
  "data-directory": %q,
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  %s,
  "option-data": [%s],
  "subnet6": [{"id": 1, "subnet": %q, "interface": %q,
    "pools": [{"pool": "%s-%s"}]%s,
    "reservations": [%s]}],
  "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
}}
`, ifn, l.Dir, k.LeasePath, timers, opts, l.Config.Prefix, ifn, k.PoolStart, k.PoolEnd, pdPools, reservations)
	}
	conf := k.conf("")
	confPath := filepath.Join(l.Dir, "kea.conf")
	k.confPath = confPath
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

// Reserve makes Kea hand addr to the client with MAC hw (a host
// reservation by hw-address, which Kea takes from the client's DUID or
// EUI-64 link-local address), as an operator would for a host whose
// address is decided elsewhere (a provider network's IPAM): it rewrites
// the config and reloads it (SIGHUP), waiting for the reload to complete.
func (k *Kea) Reserve(hw net.HardwareAddr, addr netip.Addr) error {
	k.reservations = append(k.reservations, fmt.Sprintf(`{"hw-address": %q, "ip-addresses": [%q]}`, hw.String(), addr.String()))
	if err := os.WriteFile(k.confPath, []byte(k.conf(strings.Join(k.reservations, ", "))), 0o600); err != nil {
		return err
	}
	const done, failed = "DHCP6_CONFIG_COMPLETE", "DHCP6_DYNRECONFIG_FAIL"
	count := func() (int, int) {
		b, _ := os.ReadFile(k.logPath)
		return strings.Count(string(b), done), strings.Count(string(b), failed)
	}
	before, beforeFail := count()
	k.p.signal(syscall.SIGHUP)
	var fails int
	if !Poll(15*time.Second, 20*time.Millisecond, func() bool {
		var n int
		n, fails = count()
		return n > before || fails > beforeFail || k.p.exited()
	}) || fails > beforeFail || k.p.exited() {
		return fmt.Errorf("upstream: kea-dhcp6 did not reload its config with the reservation %s for %s (exited: %t):\n%s",
			addr, hw, k.p.exited(), tailFile(k.logPath, 3000))
	}
	return nil
}
