package cri

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/critest"
	"sigs.k8s.io/yaml"
)

// TestShippedConfigMapConflist runs the Kubernetes ConfigMap's conflist
// as shipped ("cniVersion": "1.0.0" with "cniVersions": ["1.0.0",
// "1.1.0"]) under containerd 2, only its socket and bridge made the
// test's: containerd runs it at 1.1.0, so STATUS reaches NetworkReady (an
// ipamd outage shows there), and a pod's addresses are ipamd's leases.
func TestShippedConfigMapConflist(t *testing.T) {
	raw, err := os.ReadFile("../../conf/kubernetes/embedded/20-configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatalf("ConfigMap: %v", err)
	}
	const key = "10-v6net.conflist"
	var conf map[string]any
	if err := json.Unmarshal([]byte(cm.Data[key]), &conf); err != nil {
		t.Fatalf("ConfigMap's %s: %v", key, err)
	}
	if conf["cniVersion"] != "1.0.0" || !slices.Contains(anyStrings(conf["cniVersions"]), "1.1.0") {
		t.Fatalf("ConfigMap's %s: cniVersion %v, cniVersions %v; this test is about 1.0.0 with 1.1.0 among cniVersions",
			key, conf["cniVersion"], conf["cniVersions"])
	}

	d := startIpamd(t)
	n := newNetwork(t)
	conf["name"] = n.name
	plugin := conf["plugins"].([]any)[0].(map[string]any)
	plugin["bridge"] = n.bridge
	plugin["ipam"].(map[string]any)["socket"] = d.socket
	list, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t, list)
	waitNetworkReady(t, c, true)

	id, err := c.RunPod(testCtx(t), critest.PodConfig{Name: "shipped"})
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	if got, want := podAddrs(t, c, id), d.leasesOf(t, id); len(got) != 1 || !slices.Equal(got, want) {
		t.Fatalf("pod %s: addresses %v, ipamd's leases %v", id, got, want)
	}

	if err := d.terminate(); err != nil {
		t.Fatal(err)
	}
	cond := waitNetworkReady(t, c, false)
	if !strings.Contains(cond.Message, "ipamd") {
		t.Errorf("NetworkReady false with message %q; want v6cni's, naming ipamd (STATUS at 1.1.0)", cond.Message)
	}
	d.start(t)
	waitNetworkReady(t, c, true)

	if err := c.RemovePod(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	if left := d.leasesOf(t, id); len(left) != 0 {
		t.Fatalf("after stopp + rmp, ipamd still leases %v to %s", left, id)
	}
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
