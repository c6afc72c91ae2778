package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "ipamd.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newFS := func() (*flag.FlagSet, *string, *string, *time.Duration) {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		node := fs.String("node-name", "host", "")
		eps := fs.String("etcd-endpoints", "", "")
		grace := fs.Duration("gc-grace", time.Minute, "")
		fs.String("config", "", "")
		return fs, node, eps, grace
	}

	fs, node, eps, grace := newFS()
	path := write("nodeName: n1\netcdEndpoints: [http://127.0.0.1:1, http://127.0.0.1:2]\ngcGrace: 90s\nbgp:\n  asn: 65001\n")
	if err := fs.Parse([]string{"--node-name", "from-flag", "--config", path}); err != nil {
		t.Fatal(err)
	}
	fc, err := loadConfig(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	if *node != "from-flag" || *eps != "http://127.0.0.1:1,http://127.0.0.1:2" || *grace != 90*time.Second {
		t.Errorf("node=%q eps=%q grace=%v", *node, *eps, *grace)
	}
	if !strings.Contains(string(fc.BGP), "65001") {
		t.Errorf("bgp section = %s", fc.BGP)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"nodeNmae: x\n", `unknown key "nodeNmae"`},
		{"gcGrace: soon\n", `gcGrace: "soon"`},
		{"- a\n- b\n", "not a mapping"},
		{"nodeName: {a: 1}\n", "nodeName"},
	} {
		fs, _, _, _ := newFS()
		if _, err := loadConfig(write(tc.yaml), fs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want it to name %q", tc.yaml, err, tc.want)
		}
	}
}

// TestInlinePasswordNeedsPrivateConfig: a config file with an inline BGP
// password is refused unless only its owner can read it; without a
// password its mode does not matter.
func TestInlinePasswordNeedsPrivateConfig(t *testing.T) {
	const withPW = "bgp:\n  asn: 65001\n  peers:\n    - address: 2001:db8::1\n      asn: 65000\n      password: s3cret-pw\n"
	const withFile = "bgp:\n  asn: 65001\n  peers:\n    - address: 2001:db8::1\n      asn: 65000\n      passwordFile: /etc/v6cni/bgp-password\n"
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr string
	}{
		{"inline 0600", withPW, 0o600, ""},
		{"inline 0400", withPW, 0o400, ""},
		{"inline 0644", withPW, 0o644, "mode 0644 lets other users read bgp.peers[0].password"},
		{"inline 0640", withPW, 0o640, "mode 0640"},
		{"passwordFile 0644", withFile, 0o644, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "ipamd.yaml")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.String("config", "", "")
			_, err := loadConfig(p, fs)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v, want one naming %s and containing %q", err, p, tc.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestPDConfig: the pd section goes through pdnet.ParseConfig (unknown
// keys refused), flags win over it, and the result is validated after
// the flags are applied.
func TestPDConfig(t *testing.T) {
	for _, tc := range []struct {
		section, iface string
		plen           int
		wantErr        string
		wantIface      string
		wantLen        int
	}{
		{section: `{"interface": "eth1", "prefixLength": 56}`, wantIface: "eth1", wantLen: 56},
		{section: `{"interface": "eth1", "prefixLength": 56}`, iface: "eth2", plen: 60, wantIface: "eth2", wantLen: 60},
		{section: ``, iface: "eth3", wantIface: "eth3"},
		{section: `{"interfaces": "eth1"}`, wantErr: `unknown key "interfaces"`},
		{section: `{"mode": "cluster", "cluster": {"segment": "r1"}}`, wantErr: "pd.interface: required"},
		{section: `{"mode": "cluster", "cluster": {"segment": "r1"}}`, iface: "eth1", wantIface: "eth1"},
	} {
		cfg, err := pdConfig([]byte(tc.section), tc.iface, tc.plen)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.section, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.section, err)
			continue
		}
		if cfg.Interface != tc.wantIface || cfg.PrefixLength != tc.wantLen {
			t.Errorf("%s (flags %q %d): got %+v", tc.section, tc.iface, tc.plen, cfg)
		}
	}
}
