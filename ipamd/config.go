package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/v6cni/v6cni/pkg/daemon/bgpspeaker"
	"github.com/v6cni/v6cni/pkg/daemon/pdnet"
)

// fileConfig is ipamd's YAML config file (--config). Every flag of serve
// has a key, its name in camelCase (--etcd-endpoints: etcdEndpoints; a list
// may be a YAML list); flags given on the command line win. Sections that
// are not flags: bgp (the BGP speaker), pd (the DHCPv6-PD client, also
// settable by --pd-interface and --pd-prefix-length).
type fileConfig struct {
	// flags holds the scalar keys, as the flag values they set.
	flags map[string]string
	// PD and BGP are the raw sections, decoded by their packages.
	PD, BGP json.RawMessage
}

// sections are the keys of the config file that are not flags.
var sections = []string{"pd", "bgp"}

// loadConfig reads the config file and applies its values to every flag of
// fs not set on the command line.
func loadConfig(path string, fs *flag.FlagSet) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("--config %s: not a mapping of keys: %w", path, err)
	}
	if err := checkInlineSecrets(path, raw["bgp"]); err != nil {
		return nil, err
	}
	fc := &fileConfig{flags: map[string]string{}, PD: raw["pd"], BGP: raw["bgp"]}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for key, val := range raw {
		if slices.Contains(sections, key) {
			continue
		}
		name := kebab(key)
		f := fs.Lookup(name)
		if f == nil || name == "config" {
			return nil, fmt.Errorf("--config %s: unknown key %q", path, key)
		}
		s, err := scalar(val)
		if err != nil {
			return nil, fmt.Errorf("--config %s: %s: %w", path, key, err)
		}
		fc.flags[name] = s
		if set[name] {
			continue // the command line wins
		}
		if err := fs.Set(name, s); err != nil {
			return nil, fmt.Errorf("--config %s: %s: %q: %w", path, key, s, err)
		}
	}
	return fc, nil
}

// scalar turns a JSON value into flag text: strings as they are, numbers
// and booleans as written, lists joined by commas.
func scalar(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err == nil {
		return strings.Join(list, ","), nil
	}
	var any any
	if err := json.Unmarshal(v, &any); err != nil {
		return "", err
	}
	switch any.(type) {
	case float64, bool:
		return string(v), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or list of strings, got %s", v)
}

// kebab turns a camelCase key into its flag name.
func kebab(key string) string {
	var b strings.Builder
	for i, r := range key {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checkInlineSecrets refuses a config file that holds a BGP password inline
// while users other than its owner can read it (make install writes it
// 0600; a Kubernetes ConfigMap is 0644, hence passwordFile/passwordEnv).
// Refused rather than warned about: by the time a warning is read the
// password has been readable all along.
func checkInlineSecrets(path string, bgp json.RawMessage) error {
	var sec struct {
		Peers []struct {
			Password string `json:"password"`
		} `json:"peers"`
	}
	if len(bgp) == 0 || json.Unmarshal(bgp, &sec) != nil {
		return nil // the bgp section's own decoder reports what is wrong
	}
	for i, p := range sec.Peers {
		if p.Password == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("--config %s: %w", path, err)
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			return fmt.Errorf("--config %s: mode %04o lets other users read bgp.peers[%d].password: chmod 600 the file, or move the password to passwordFile or passwordEnv", path, mode, i)
		}
	}
	return nil
}

// pdConfig merges the config file's pd section (pdnet.ParseConfig) with
// the flags (which win).
func pdConfig(section json.RawMessage, iface string, prefixLen int) (pdnet.Config, error) {
	cfg, err := pdnet.ParseConfig(section)
	if err != nil {
		return cfg, fmt.Errorf("--config: %w", err)
	}
	if iface != "" {
		cfg.Interface = iface
	}
	if prefixLen != 0 {
		cfg.PrefixLength = prefixLen
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("--config: %w", err)
	}
	return cfg, nil
}

// bgpConfig decodes the config file's bgp section; ok is false when there
// is none (no BGP speaker).
func bgpConfig(fc *fileConfig) (cfg bgpspeaker.Config, ok bool, err error) {
	if fc == nil || len(fc.BGP) == 0 || string(fc.BGP) == "null" {
		return cfg, false, nil
	}
	if cfg, err = bgpspeaker.ParseConfig(fc.BGP); err != nil {
		return cfg, false, fmt.Errorf("--config: bgp: %w", err)
	}
	return cfg, true, nil
}
