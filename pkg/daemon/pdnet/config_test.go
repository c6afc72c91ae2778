package pdnet

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/v6cni/v6cni/pkg/daemon/dhcp6pd"
)

// TestParseConfigNodeMode: node mode gives exactly the dhcp6pd.Config a
// plain decode of the section gave before cluster mode.
func TestParseConfigNodeMode(t *testing.T) {
	for _, raw := range []string{
		``,
		`null`,
		`{}`,
		`{"interface": "eth1"}`,
		`{"interface": "eth1", "prefixLength": 56}`,
		`{"mode": "node", "interface": "eth1", "prefixLength": 56, "duid": "00:03:00:01:02:00:00:00:00:02", "iaid": 7}`,
		`{"interface": "eth1", "prefixLength": 0, "iaid": 0, "duid": ""}`,
	} {
		t.Run(raw, func(t *testing.T) {
			c, err := ParseConfig([]byte(raw))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if c.Mode != ModeNode {
				t.Errorf("mode %q, want node", c.Mode)
			}
			var want dhcp6pd.Config
			if raw != "" {
				if err := json.Unmarshal([]byte(raw), &want); err != nil {
					t.Fatal(err)
				}
			}
			// A decode with "mode" is what the old code would have
			// ignored: the key is new.
			if got := c.ClientConfig(); !reflect.DeepEqual(got, want) {
				t.Errorf("ClientConfig() = %+v, want %+v", got, want)
			}
			if c.Enabled() != (want.Interface != "") {
				t.Errorf("Enabled() = %v with interface %q", c.Enabled(), want.Interface)
			}
		})
	}
}

func TestParseConfigCluster(t *testing.T) {
	c, err := ParseConfig([]byte(`{"mode": "cluster", "interface": "eth1", "prefixLength": 56,
		"cluster": {"segment": "rack1-uplink", "leaseTTL": "4s", "subnetLength": 60, "blockSize": 64}}`))
	if err != nil {
		t.Fatal(err)
	}
	cc := c.Cluster
	if c.Mode != ModeCluster || c.Interface != "eth1" || c.PrefixLength != 56 || cc.Segment != "rack1-uplink" ||
		!cc.Candidate || cc.LeaseTTL != 4*time.Second || cc.SubnetLength != 60 || cc.BlockSize != 64 || cc.IAID != 1 || cc.DUID != nil {
		t.Errorf("got %+v", c)
	}
	if !cc.Set("subnetLength") || !cc.Set("blockSize") || cc.Set("duid") || cc.Set("iaid") {
		t.Errorf("set = %v", cc.set)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Defaults, and a consumer without an interface.
	c, err = ParseConfig([]byte(`{"mode": "cluster", "cluster": {"segment": "r1", "candidate": false, "duid": "00:04:01:02:03", "iaid": 9, "leaseTTL": 2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Candidate || c.Cluster.LeaseTTL != 2*time.Second || c.Cluster.SubnetLength != 64 || c.Cluster.BlockSize != 64 ||
		c.Cluster.IAID != 9 || c.Cluster.DUID.String() != "00:04:01:02:03" || !c.Enabled() {
		t.Errorf("got %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestParseConfigErrors: every error names the key (and the value where
// there is one).
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want []string // substrings of the error
	}{
		{`[]`, []string{"pd:", "mapping"}},
		{`{"interfce": "eth1"}`, []string{`unknown key "interfce"`}},
		{`{"mode": "ha"}`, []string{"pd.mode", `"ha"`}},
		{`{"mode": 1}`, []string{"pd.mode", "1", "string"}},
		{`{"interface": "a-very-long-interface"}`, []string{"pd.interface", "a-very-long-interface"}},
		{`{"interface": "eth/1"}`, []string{"pd.interface", "eth/1"}},
		{`{"prefixLength": 129}`, []string{"pd.prefixLength", "129"}},
		{`{"prefixLength": 56.5}`, []string{"pd.prefixLength", "56.5"}},
		{`{"duid": "zz"}`, []string{"pd.duid", "zz"}},
		{`{"iaid": -1}`, []string{"pd.iaid", "-1"}},
		{`{"cluster": {"segment": "a"}}`, []string{"pd.cluster", "mode cluster"}},
		{`{"mode": "cluster"}`, []string{"pd.cluster", "required"}},
		{`{"mode": "cluster", "cluster": {}}`, []string{"pd.cluster.segment", "required"}},
		{`{"mode": "cluster", "cluster": []}`, []string{"pd.cluster", "mapping"}},
		{`{"mode": "cluster", "duid": "00:04:01", "cluster": {"segment": "a"}}`, []string{"pd.duid", "cluster.duid"}},
		{`{"mode": "cluster", "iaid": 3, "cluster": {"segment": "a"}}`, []string{"pd.iaid", "cluster.iaid"}},
		{`{"mode": "cluster", "cluster": {"segment": "Rack1"}}`, []string{"pd.cluster.segment", `"Rack1"`}},
		{`{"mode": "cluster", "cluster": {"segment": "` + strings.Repeat("a", 64) + `"}}`, []string{"pd.cluster.segment"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "segmnt": "b"}}`, []string{`pd.cluster: unknown key "segmnt"`}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "candidate": "yes"}}`, []string{"pd.cluster.candidate", `"yes"`}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "leaseTTL": "1s"}}`, []string{"pd.cluster.leaseTTL", "1s"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "leaseTTL": "11s"}}`, []string{"pd.cluster.leaseTTL", "11s"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "leaseTTL": "2500ms"}}`, []string{"pd.cluster.leaseTTL", "2.5s"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "leaseTTL": "soon"}}`, []string{"pd.cluster.leaseTTL", "soon"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "duid": "0"}}`, []string{"pd.cluster.duid", `"0"`}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "iaid": 0}}`, []string{"pd.cluster.iaid", "0"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "subnetLength": 121}}`, []string{"pd.cluster.subnetLength", "121"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "blockSize": 0}}`, []string{"pd.cluster.blockSize", "0"}},
		{`{"mode": "cluster", "cluster": {"segment": "a", "subnetLength": 64, "blockSize": 60}}`, []string{"pd.cluster.blockSize", "60", "subnetLength"}},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.raw))
			if err == nil {
				t.Fatalf("ParseConfig accepted %s", tc.raw)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	c, err := ParseConfig([]byte(`{"mode": "cluster", "cluster": {"segment": "rack1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "pd.interface") || !strings.Contains(err.Error(), "rack1") {
		t.Errorf("candidate without interface: %v", err)
	}
	c.Interface = "eth1" // --pd-interface
	if err := c.Validate(); err != nil {
		t.Errorf("with the flag's interface: %v", err)
	}
	c.Interface = "0123456789abcdefg"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), c.Interface) {
		t.Errorf("long interface from the flag: %v", err)
	}
}

// FuzzParseConfig: ParseConfig never panics, and what it accepts passes a
// second parse of the same text the same way.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"interface": "eth1", "prefixLength": 56}`,
		`{"mode": "cluster", "interface": "eth1", "cluster": {"segment": "r1", "leaseTTL": "3s", "subnetLength": 60, "blockSize": 64}}`,
		`{"mode": "cluster", "cluster": {"segment": "r1", "candidate": false, "duid": "00:04:aa:bb", "iaid": 2}}`,
		`null`, `[]`, `{"cluster": null}`, `{"mode": "cluster", "cluster": {"leaseTTL": 1e308}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil {
			return
		}
		_ = c.Validate()
		if c.Mode != ModeNode && c.Mode != ModeCluster {
			t.Fatalf("accepted mode %q", c.Mode)
		}
		if c.Mode == ModeCluster {
			cc := c.Cluster
			if !segmentRE.MatchString(cc.Segment) || cc.BlockSize < cc.SubnetLength || cc.BlockSize > MaxBlockSize ||
				cc.LeaseTTL < 2*time.Second || cc.LeaseTTL > 10*time.Second || cc.IAID == 0 {
				t.Fatalf("accepted %+v", cc)
			}
		}
		if err := c.ClientConfig().Validate(); err != nil && c.Interface != "" {
			t.Fatalf("node config %+v not valid for dhcp6pd: %v", c.ClientConfig(), err)
		}
	})
}
