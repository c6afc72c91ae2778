// Package conf holds example configurations; its test keeps every example
// conflist valid for libcni and for the v6cni plugins' own parsers.
package conf

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/v6cni/v6cni/pkg/ipamconf"
	"github.com/v6cni/v6cni/pkg/plugin/bridgeconf"
)

func TestExampleConflists(t *testing.T) {
	files, err := filepath.Glob("*.conflist")
	if err != nil || len(files) < 4 {
		t.Fatalf("example conflists: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			list, err := libcni.ConfListFromFile(f)
			if err != nil {
				t.Fatalf("libcni: %v", err)
			}
			for _, p := range list.Plugins {
				if p.Network.Type != "bridge-v6" {
					continue
				}
				// What the plugin gets on stdin: the plugin's config with the
				// list's name and version.
				var conf map[string]any
				if err := json.Unmarshal(p.Bytes, &conf); err != nil {
					t.Fatal(err)
				}
				conf["name"], conf["cniVersion"] = list.Name, list.CNIVersion
				stdin, _ := json.Marshal(conf)
				if _, err := bridgeconf.Parse(stdin); err != nil {
					t.Errorf("bridge-v6: %v", err)
				}
				if _, err := ipamconf.Parse(stdin); err != nil {
					t.Errorf("ipam: %v", err)
				}
			}
		})
	}
}
