// Package kubernetes holds only this test: it parses every manifest of
// conf/kubernetes (each subdirectory is a variant that is applied as a
// whole, `kubectl apply -f DIR`) and checks the references between the
// objects, so that a renamed ConfigMap key, volume or port cannot rot
// silently.
package kubernetes

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ipamdKeys are the keys ipamd's config file accepts (ipamd/README.md: the
// serve flags in camelCase, plus the sections pd and bgp).
var ipamdKeys = []string{
	"nodeName", "socket", "dataDir", "etcdEndpoints", "etcdCacert", "etcdCert",
	"etcdKey", "logFormat", "metricsAddr", "gcInterval", "gcGrace", "blockGrace",
	"pdInterface", "pdPrefixLength", "pd", "bgp",
}

const (
	// image is the placeholder for what `make image` would build
	// (conf/kubernetes/Dockerfile).
	image         = "ghcr.io/v6cni/v6cni:latest"
	defaultSocket = "/run/v6cni/ipamd.sock"
	defaultData   = "/var/lib/v6cni"
	ipamdName     = "ipamd"
	netnsDir      = "/run/netns"
)

// variants are the subdirectories and whether they use an external etcd.
var variants = map[string]bool{"embedded": false, "cluster": true}

type meta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// object is one YAML document of a manifest file.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   meta              `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Spec       json.RawMessage   `json:"spec"`

	file string // relative to conf/kubernetes
	doc  int    // 1-based document number in file
}

func (o *object) String() string {
	return fmt.Sprintf("%s (document %d): %s %q", o.file, o.doc, o.Kind, o.Metadata.Name)
}

// keys are the keys of a ConfigMap's or Secret's data.
func (o *object) keys() map[string]string {
	m := map[string]string{}
	for k, v := range o.Data {
		m[k] = v
	}
	for k, v := range o.StringData {
		m[k] = v
	}
	return m
}

type keyToPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

type volume struct {
	Name      string `json:"name"`
	ConfigMap *struct {
		Name  string      `json:"name"`
		Items []keyToPath `json:"items"`
	} `json:"configMap"`
	Secret *struct {
		SecretName  string      `json:"secretName"`
		Items       []keyToPath `json:"items"`
		DefaultMode *int32      `json:"defaultMode"`
	} `json:"secret"`
	HostPath *struct {
		Path string `json:"path"`
		Type string `json:"type"`
	} `json:"hostPath"`
	EmptyDir *json.RawMessage `json:"emptyDir"`
}

type volumeMount struct {
	Name             string `json:"name"`
	MountPath        string `json:"mountPath"`
	SubPath          string `json:"subPath"`
	ReadOnly         bool   `json:"readOnly"`
	MountPropagation string `json:"mountPropagation"`
}

type containerPort struct {
	Name          string `json:"name"`
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort"`
}

type container struct {
	Name         string          `json:"name"`
	Image        string          `json:"image"`
	Command      []string        `json:"command"`
	Args         []string        `json:"args"`
	Ports        []containerPort `json:"ports"`
	VolumeMounts []volumeMount   `json:"volumeMounts"`
}

type podSpec struct {
	ServiceAccountName string      `json:"serviceAccountName"`
	HostNetwork        bool        `json:"hostNetwork"`
	HostPID            bool        `json:"hostPID"`
	InitContainers     []container `json:"initContainers"`
	Containers         []container `json:"containers"`
	Volumes            []volume    `json:"volumes"`
}

type daemonSetSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Template struct {
		Metadata meta    `json:"metadata"`
		Spec     podSpec `json:"spec"`
	} `json:"template"`
}

type serviceSpec struct {
	Selector map[string]string `json:"selector"`
	Ports    []struct {
		Name       string          `json:"name"`
		Port       int             `json:"port"`
		TargetPort json.RawMessage `json:"targetPort"`
	} `json:"ports"`
}

// variant is the objects of one subdirectory.
type variant struct {
	name    string
	objects []*object
}

func (v *variant) find(kind, name string) *object {
	for _, o := range v.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

func (v *variant) ofKind(kind string) []*object {
	var out []*object
	for _, o := range v.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// load parses every .yaml/.yml file of dir, every document of each.
func load(t *testing.T, dir string) *variant {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := &variant{name: dir}
	for _, f := range files {
		ext := filepath.Ext(f.Name())
		if f.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		file := filepath.Join(dir, f.Name())
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(data), -1) {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Errorf("%s (document %d): not YAML: %v", file, i+1, err)
				continue
			}
			if string(js) == "null" {
				continue // comments only
			}
			o := &object{file: file, doc: i + 1}
			if err := json.Unmarshal(js, o); err != nil {
				t.Errorf("%s (document %d): %v", file, i+1, err)
				continue
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s (document %d): apiVersion, kind and metadata.name are required", file, i+1)
				continue
			}
			v.objects = append(v.objects, o)
		}
	}
	if len(v.objects) == 0 {
		t.Fatalf("%s: no manifests", dir)
	}
	return v
}

func TestVariantsExist(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	for _, d := range dirs {
		if _, ok := variants[d]; !ok {
			t.Errorf("conf/kubernetes/%s: a directory this test does not know as a variant; add it to variants", d)
		}
	}
	for v := range variants {
		if !slices.Contains(dirs, v) {
			t.Errorf("conf/kubernetes/%s: variant missing", v)
		}
	}
}

func TestManifests(t *testing.T) {
	names := make([]string, 0, len(variants))
	for n := range variants {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			v := load(t, name)
			checkObjects(t, v)
			checkConflists(t, v)
			dss := v.ofKind("DaemonSet")
			if len(dss) != 1 {
				t.Fatalf("%s: want one DaemonSet, found %d", name, len(dss))
			}
			checkDaemonSet(t, v, dss[0], variants[name])
			for _, svc := range v.ofKind("Service") {
				checkService(t, v, svc)
			}
		})
	}
}

// checkObjects: unique names, one Namespace, every object in it.
func checkObjects(t *testing.T, v *variant) {
	seen := map[string]*object{}
	for _, o := range v.objects {
		id := o.Kind + "/" + o.Metadata.Name
		if prev := seen[id]; prev != nil {
			t.Errorf("%s: defined again (first in %s)", o, prev.file)
		}
		seen[id] = o
	}
	nss := v.ofKind("Namespace")
	if len(nss) != 1 {
		t.Fatalf("%s: want one Namespace, found %d", v.name, len(nss))
	}
	ns := nss[0].Metadata.Name
	for _, o := range v.objects {
		if o.Kind == "Namespace" {
			if o.Metadata.Namespace != "" {
				t.Errorf("%s: a Namespace has no metadata.namespace", o)
			}
			continue
		}
		if o.Metadata.Namespace != ns {
			t.Errorf("%s: metadata.namespace %q, want the variant's Namespace %q (%s)", o, o.Metadata.Namespace, ns, nss[0].file)
		}
	}
	for _, o := range v.ofKind("ConfigMap") {
		if len(o.keys()) == 0 {
			t.Errorf("%s: no data", o)
		}
	}
}

// checkConflists: every *.conflist key of a ConfigMap is a network
// configuration list whose first plugin is bridge-v6.
func checkConflists(t *testing.T, v *variant) {
	n := 0
	for _, cm := range v.ofKind("ConfigMap") {
		for key, val := range cm.keys() {
			if !strings.HasSuffix(key, ".conflist") {
				continue
			}
			n++
			nl, err := parseConflist(val)
			if err != nil {
				t.Errorf("%s: key %q: %v", cm, key, err)
				continue
			}
			if nl.Name == "" || nl.CNIVersion == "" {
				t.Errorf("%s: key %q: name and cniVersion are required", cm, key)
			}
			if len(nl.Plugins) == 0 || nl.Plugins[0].Type != "bridge-v6" {
				t.Errorf("%s: key %q: plugins[0].type must be \"bridge-v6\"", cm, key)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no ConfigMap holds a *.conflist key", v.name)
	}
}

type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type string `json:"type"`
		IPAM struct {
			Type   string `json:"type"`
			Socket string `json:"socket"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func parseConflist(s string) (*conflist, error) {
	var nl conflist
	if err := json.Unmarshal([]byte(s), &nl); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	return &nl, nil
}

// pod is a DaemonSet's pod template with what is needed to resolve paths.
type pod struct {
	v    *variant
	ds   *object
	spec podSpec
}

func (p *pod) volume(name string) *volume {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i]
		}
	}
	return nil
}

// files maps the file names a ConfigMap or Secret volume shows to the keys
// behind them; nil for other volumes.
func (p *pod) files(vol *volume) (map[string]string, *object) {
	var items []keyToPath
	var src *object
	switch {
	case vol.ConfigMap != nil:
		items, src = vol.ConfigMap.Items, p.v.find("ConfigMap", vol.ConfigMap.Name)
	case vol.Secret != nil:
		items, src = vol.Secret.Items, p.v.find("Secret", vol.Secret.SecretName)
	default:
		return nil, nil
	}
	if src == nil {
		return nil, nil
	}
	m := map[string]string{}
	if len(items) == 0 {
		for k := range src.keys() {
			m[k] = k
		}
	}
	for _, it := range items {
		m[path.Clean(it.Path)] = it.Key
	}
	return m, src
}

// resolved is where a path of a container comes from.
type resolved struct {
	mount  volumeMount
	vol    *volume
	rel    string  // path inside the volume ("" for its root)
	src    *object // ConfigMap or Secret
	key    string  // its key, when rel is one of its files
	hostFS string  // the node's path, for a hostPath volume
}

// resolve finds the volume mount of c that holds file, the deepest one.
func (p *pod) resolve(c container, file string) (*resolved, error) {
	file = path.Clean(file)
	var best *volumeMount
	for i, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if file == mp || strings.HasPrefix(file, mp+"/") {
			if best == nil || len(mp) > len(path.Clean(best.MountPath)) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%s is on no volume mount", file)
	}
	r := &resolved{mount: *best, vol: p.volume(best.Name)}
	if r.vol == nil {
		return nil, fmt.Errorf("%s: volume mount %q names no volume", file, best.Name)
	}
	r.rel = strings.TrimPrefix(strings.TrimPrefix(file, path.Clean(best.MountPath)), "/")
	if best.SubPath != "" {
		r.rel = path.Join(best.SubPath, r.rel)
	}
	if r.vol.HostPath != nil {
		r.hostFS = path.Join(r.vol.HostPath.Path, r.rel)
	}
	if files, src := p.files(r.vol); src != nil {
		r.src = src
		key, ok := files[r.rel]
		if !ok {
			return nil, fmt.Errorf("%s: volume %q (%s) has no file %q", file, r.vol.Name, src, r.rel)
		}
		if _, ok := src.keys()[key]; !ok {
			return nil, fmt.Errorf("%s: volume %q shows key %q, which %s does not have", file, r.vol.Name, key, src)
		}
		r.key = key
	}
	return r, nil
}

func checkDaemonSet(t *testing.T, v *variant, ds *object, external bool) {
	var spec daemonSetSpec
	if err := json.Unmarshal(ds.Spec, &spec); err != nil {
		t.Fatalf("%s: spec: %v", ds, err)
	}
	p := &pod{v: v, ds: ds, spec: spec.Template.Spec}
	ps := p.spec
	if len(spec.Selector.MatchLabels) == 0 {
		t.Errorf("%s: spec.selector.matchLabels is empty", ds)
	}
	for k, val := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != val {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels", ds, k, val)
		}
	}
	if ps.ServiceAccountName == "" || v.find("ServiceAccount", ps.ServiceAccountName) == nil {
		t.Errorf("%s: serviceAccountName %q: no such ServiceAccount in %s", ds, ps.ServiceAccountName, v.name)
	}
	if !ps.HostNetwork {
		t.Errorf("%s: hostNetwork must be true (netlink, DHCPv6-PD and BGP in the node's network namespace)", ds)
	}
	if !ps.HostPID {
		t.Errorf("%s: hostPID must be true (GC checks /proc/<pid>/ns/net paths of the node's processes)", ds)
	}

	// Volumes and their sources.
	vols := map[string]bool{}
	for _, vol := range ps.Volumes {
		if vols[vol.Name] {
			t.Errorf("%s: volume %q defined twice", ds, vol.Name)
		}
		vols[vol.Name] = true
		n := 0
		for _, set := range []bool{vol.ConfigMap != nil, vol.Secret != nil, vol.HostPath != nil, vol.EmptyDir != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: volume %q: want exactly one of configMap, secret, hostPath, emptyDir", ds, vol.Name)
		}
		var items []keyToPath
		var src *object
		switch {
		case vol.ConfigMap != nil:
			if src = v.find("ConfigMap", vol.ConfigMap.Name); src == nil {
				t.Errorf("%s: volume %q: no ConfigMap %q in %s", ds, vol.Name, vol.ConfigMap.Name, v.name)
			}
			items = vol.ConfigMap.Items
		case vol.Secret != nil:
			if src = v.find("Secret", vol.Secret.SecretName); src == nil {
				t.Errorf("%s: volume %q: no Secret %q in %s", ds, vol.Name, vol.Secret.SecretName, v.name)
			}
			items = vol.Secret.Items
			// Secrets are for root's eyes only (Kubernetes' default is 0644).
			if m := vol.Secret.DefaultMode; m == nil || *m&0o077 != 0 {
				t.Errorf("%s: volume %q: Secret %q without an owner-only defaultMode (want 0400)", ds, vol.Name, vol.Secret.SecretName)
			}
		case vol.HostPath != nil:
			if !path.IsAbs(vol.HostPath.Path) {
				t.Errorf("%s: volume %q: hostPath.path %q is not absolute", ds, vol.Name, vol.HostPath.Path)
			}
		}
		if src != nil {
			keys := src.keys()
			for _, it := range items {
				if _, ok := keys[it.Key]; !ok {
					t.Errorf("%s: volume %q: item key %q is not a key of %s", ds, vol.Name, it.Key, src)
				}
			}
		}
	}

	all := append(slices.Clone(ps.InitContainers), ps.Containers...)
	var ipamd *container
	for i, c := range all {
		if c.Image != image {
			t.Errorf("%s: container %q: image %q, want %q (what make image builds)", ds, c.Name, c.Image, image)
		}
		for _, m := range c.VolumeMounts {
			vol := p.volume(m.Name)
			if vol == nil {
				t.Errorf("%s: container %q: volumeMount %q names no volume of the pod", ds, c.Name, m.Name)
				continue
			}
			if !path.IsAbs(m.MountPath) {
				t.Errorf("%s: container %q: volumeMount %q: mountPath %q is not absolute", ds, c.Name, m.Name, m.MountPath)
			}
			if m.SubPath != "" {
				if files, src := p.files(vol); src != nil {
					sub := path.Clean(m.SubPath)
					found := false
					for f := range files {
						if f == sub || strings.HasPrefix(f, sub+"/") {
							found = true
						}
					}
					if !found {
						t.Errorf("%s: container %q: volumeMount %q: subPath %q is no file of volume %q (%s)", ds, c.Name, m.Name, m.SubPath, vol.Name, src)
					}
				}
			}
		}
		if c.Name == ipamdName && i >= len(ps.InitContainers) {
			ipamd = &all[i]
		}
	}
	if ipamd == nil {
		t.Fatalf("%s: no container named %q", ds, ipamdName)
	}
	cfg := checkIpamd(t, p, *ipamd, external)
	checkInstall(t, p, cfg)
}

// ipamdConfig is what the checks need of ipamd's config file.
type ipamdConfig struct {
	socket string // the node's path of ipamd's socket
}

// flagValue returns the value of --name (as "--name V" or "--name=V").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		for _, pre := range []string{"--" + name, "-" + name} {
			if a == pre && i+1 < len(args) {
				return args[i+1], true
			}
			if strings.HasPrefix(a, pre+"=") {
				return strings.TrimPrefix(a, pre+"="), true
			}
		}
	}
	return "", false
}

func checkIpamd(t *testing.T, p *pod, c container, external bool) *ipamdConfig {
	ds := p.ds
	args := append(slices.Clone(c.Command), c.Args...)
	if !slices.Contains(args, "serve") {
		t.Errorf("%s: container %q: command and args %q do not run `ipamd serve`", ds, c.Name, args)
	}
	cfgPath, ok := flagValue(args, "config")
	if !ok {
		t.Fatalf("%s: container %q: no --config in command and args %q", ds, c.Name, args)
	}
	r, err := p.resolve(c, cfgPath)
	if err != nil {
		t.Fatalf("%s: container %q: --config: %v", ds, c.Name, err)
	}
	if r.src == nil || r.src.Kind != "ConfigMap" {
		t.Fatalf("%s: container %q: --config %s is not a file of a ConfigMap volume", ds, c.Name, cfgPath)
	}
	text := r.src.keys()[r.key]
	where := fmt.Sprintf("%s key %q (ipamd --config %s)", r.src, r.key, cfgPath)
	js, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		t.Fatalf("%s: not YAML: %v", where, err)
	}
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(js, &conf); err != nil {
		t.Fatalf("%s: not a mapping of keys: %v", where, err)
	}
	for k := range conf {
		if !slices.Contains(ipamdKeys, k) {
			t.Errorf("%s: unknown key %q (ipamd refuses it; known: %s)", where, k, strings.Join(ipamdKeys, ", "))
		}
	}
	str := func(key string) string {
		var s string
		if raw, ok := conf[key]; ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Errorf("%s: %s: want a string: %v", where, key, err)
			}
		}
		return s
	}

	// etcd: embedded with its data on the node, or external with TLS files
	// from the Secret.
	var endpoints []string
	if raw, ok := conf["etcdEndpoints"]; ok {
		var list []string
		var s string
		if json.Unmarshal(raw, &list) == nil {
			endpoints = list
		} else if json.Unmarshal(raw, &s) == nil {
			endpoints = strings.Split(s, ",")
		} else {
			t.Errorf("%s: etcdEndpoints: want a list or a comma-separated string", where)
		}
	}
	switch {
	case external && len(endpoints) == 0:
		t.Errorf("%s: the %s variant uses an external etcd: etcdEndpoints is required", where, p.v.name)
	case !external && len(endpoints) > 0:
		t.Errorf("%s: the %s variant runs the embedded etcd: no etcdEndpoints", where, p.v.name)
	}
	tlsNeeded := false
	for _, ep := range endpoints {
		if strings.HasPrefix(strings.TrimSpace(ep), "https://") {
			tlsNeeded = true
		}
	}
	if external && !tlsNeeded {
		t.Errorf("%s: the %s variant's etcd endpoints must be https://", where, p.v.name)
	}
	for _, key := range []string{"etcdCacert", "etcdCert", "etcdKey"} {
		file := str(key)
		if file == "" {
			if tlsNeeded {
				t.Errorf("%s: %s is required with https:// endpoints", where, key)
			}
			continue
		}
		r, err := p.resolve(c, file)
		if err != nil {
			t.Errorf("%s: %s: %v", where, key, err)
			continue
		}
		if r.src == nil || r.src.Kind != "Secret" {
			t.Errorf("%s: %s %s: not a file of a Secret volume (volume %q)", where, key, file, r.vol.Name)
		}
	}
	if len(endpoints) == 0 {
		dataDir := str("dataDir")
		if dataDir == "" {
			dataDir = defaultData
		}
		r, err := p.resolve(c, dataDir)
		switch {
		case err != nil:
			t.Errorf("%s: dataDir %s (embedded etcd): %v", where, dataDir, err)
		case r.vol.HostPath == nil:
			t.Errorf("%s: dataDir %s (embedded etcd) must be on a hostPath volume to survive the pod, is on %q", where, dataDir, r.vol.Name)
		}
	}

	// The socket must be where the plugins on the node look.
	socket := str("socket")
	if socket == "" {
		socket = defaultSocket
	}
	cfg := &ipamdConfig{}
	if r, err := p.resolve(c, socket); err != nil {
		t.Errorf("%s: socket %s: %v", where, socket, err)
	} else if r.vol.HostPath == nil {
		t.Errorf("%s: socket %s: on volume %q, which is not a hostPath: the plugins on the node cannot reach it", where, socket, r.vol.Name)
	} else {
		cfg.socket = r.hostFS
	}

	// GC looks at the runtimes' netns files.
	if r, err := p.resolve(c, netnsDir+"/x"); err != nil || r.vol.HostPath == nil || r.hostFS != netnsDir+"/x" {
		t.Errorf("%s: container %q: the node's %s must be mounted (hostPath) at %s", ds, c.Name, netnsDir, netnsDir)
	}

	// BGP passwords never inline in a ConfigMap (readable by every user
	// of the node, and refused by ipamd); a passwordFile is a Secret's.
	if raw, ok := conf["bgp"]; ok {
		var bgp struct {
			Peers []struct {
				Password     string `json:"password"`
				PasswordFile string `json:"passwordFile"`
			} `json:"peers"`
		}
		if err := json.Unmarshal(raw, &bgp); err != nil {
			t.Errorf("%s: bgp: %v", where, err)
		}
		for i, peer := range bgp.Peers {
			if peer.Password != "" {
				t.Errorf("%s: bgp.peers[%d].password inline in a ConfigMap: use passwordFile with a Secret", where, i)
			}
			if peer.PasswordFile != "" {
				if r, err := p.resolve(c, peer.PasswordFile); err != nil || r.vol.Secret == nil {
					t.Errorf("%s: bgp.peers[%d].passwordFile %s is not a file of a Secret volume (%v)", where, i, peer.PasswordFile, err)
				}
			}
		}
	}

	// Metrics: /metrics has no authentication, and with hostNetwork any
	// bind but loopback is on the node's addresses: metricsAddr is off or
	// on loopback, and no container port or Service publishes it (a
	// kube-rbac-proxy sidecar is the documented way to scrape from
	// outside).
	metrics := str("metricsAddr")
	var port int
	if metrics != "" {
		host, ps, err := net.SplitHostPort(metrics)
		if err == nil {
			port, err = strconv.Atoi(ps)
		}
		if err != nil {
			t.Errorf("%s: metricsAddr %q: not HOST:PORT: %v", where, metrics, err)
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
			t.Errorf("%s: metricsAddr %q: unauthenticated metrics on the node's addresses (hostNetwork); bind a loopback address", where, metrics)
		}
	}
	for _, cp := range c.Ports {
		if cp.HostPort != 0 && cp.HostPort != cp.ContainerPort {
			t.Errorf("%s: container %q: port %q: with hostNetwork hostPort must equal containerPort", ds, c.Name, cp.Name)
		}
		if port != 0 && cp.ContainerPort == port {
			t.Errorf("%s: container %q: port %q publishes the unauthenticated metrics port %d", ds, c.Name, cp.Name, port)
		}
	}
	return cfg
}

// checkInstall: an init container copies the plugins into the node's
// /opt/cni/bin and every conflist of the ConfigMaps into /etc/cni/net.d,
// and each conflist's ipam.socket is ipamd's socket on the node.
func checkInstall(t *testing.T, p *pod, cfg *ipamdConfig) {
	ds := p.ds
	var inits []container
	for _, c := range p.spec.InitContainers {
		script := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
		if strings.Contains(script, "/cni") {
			inits = append(inits, c)
		}
	}
	if len(inits) != 1 {
		t.Fatalf("%s: want one init container installing the CNI files, found %d", ds, len(inits))
	}
	c := inits[0]
	script := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
	hostDirs := map[string]string{} // node path -> mount path
	for _, m := range c.VolumeMounts {
		if vol := p.volume(m.Name); vol != nil && vol.HostPath != nil {
			hostDirs[path.Join(vol.HostPath.Path, m.SubPath)] = path.Clean(m.MountPath)
		}
	}
	binDir, ok := hostDirs["/opt/cni/bin"]
	if !ok {
		t.Errorf("%s: init container %q: the node's /opt/cni/bin is not mounted", ds, c.Name)
	}
	netDir, ok := hostDirs["/etc/cni/net.d"]
	if !ok {
		t.Errorf("%s: init container %q: the node's /etc/cni/net.d is not mounted", ds, c.Name)
	}
	for _, plugin := range []string{"bridge-v6", "ipam-v6", "pd-ipam"} {
		if !strings.Contains(script, plugin) {
			t.Errorf("%s: init container %q: the script does not install %s", ds, c.Name, plugin)
		}
	}
	if binDir != "" && !strings.Contains(script, binDir+"/") {
		t.Errorf("%s: init container %q: the script does not write into %s (the node's /opt/cni/bin)", ds, c.Name, binDir)
	}
	if netDir != "" && !strings.Contains(script, netDir+"/") {
		t.Errorf("%s: init container %q: the script does not write into %s (the node's /etc/cni/net.d)", ds, c.Name, netDir)
	}
	// Every conflist key reaches the init container and its script.
	for _, cm := range p.v.ofKind("ConfigMap") {
		for key, val := range cm.keys() {
			if !strings.HasSuffix(key, ".conflist") {
				continue
			}
			mounted := ""
			for _, m := range c.VolumeMounts {
				vol := p.volume(m.Name)
				if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Metadata.Name {
					continue
				}
				files, _ := p.files(vol)
				for f, k := range files {
					if k != key {
						continue
					}
					if m.SubPath == "" {
						mounted = path.Join(m.MountPath, f)
					} else if path.Clean(m.SubPath) == f {
						mounted = path.Clean(m.MountPath)
					}
				}
			}
			if mounted == "" {
				t.Errorf("%s: init container %q: %s key %q is not mounted", ds, c.Name, cm, key)
			} else if !strings.Contains(script, mounted) {
				t.Errorf("%s: init container %q: the script does not copy %s (%s key %q)", ds, c.Name, mounted, cm, key)
			}
			nl, err := parseConflist(val)
			if err != nil || cfg.socket == "" {
				continue // reported elsewhere
			}
			for i, pl := range nl.Plugins {
				if pl.IPAM.Type != "ipam-v6" && pl.IPAM.Type != "pd-ipam" {
					continue
				}
				s := pl.IPAM.Socket
				if s == "" {
					s = defaultSocket
				}
				if path.Clean(s) != cfg.socket {
					t.Errorf("%s key %q: plugins[%d].ipam.socket %s, but ipamd's socket is %s on the node (%s)", cm, key, i, s, cfg.socket, ds)
				}
			}
		}
	}
}

// checkService: the selector picks the DaemonSet's pods and each
// targetPort is one of their container ports.
func checkService(t *testing.T, v *variant, svc *object) {
	var spec serviceSpec
	if err := json.Unmarshal(svc.Spec, &spec); err != nil {
		t.Fatalf("%s: spec: %v", svc, err)
	}
	if len(spec.Selector) == 0 {
		t.Fatalf("%s: no selector", svc)
	}
	var pods []podSpec
	for _, ds := range v.ofKind("DaemonSet") {
		var dss daemonSetSpec
		if json.Unmarshal(ds.Spec, &dss) != nil {
			continue
		}
		match := true
		for k, val := range spec.Selector {
			if dss.Template.Metadata.Labels[k] != val {
				match = false
			}
		}
		if match {
			pods = append(pods, dss.Template.Spec)
		}
	}
	if len(pods) == 0 {
		t.Fatalf("%s: selector %v matches no DaemonSet's pods", svc, spec.Selector)
	}
	for _, sp := range spec.Ports {
		var name string
		var num int
		if len(sp.TargetPort) == 0 {
			num = sp.Port
		} else if json.Unmarshal(sp.TargetPort, &num) != nil {
			if err := json.Unmarshal(sp.TargetPort, &name); err != nil {
				t.Errorf("%s: port %q: targetPort %s: %v", svc, sp.Name, sp.TargetPort, err)
				continue
			}
		}
		for _, ps := range pods {
			ok := false
			for _, c := range ps.Containers {
				for _, cp := range c.Ports {
					if (name != "" && cp.Name == name) || (name == "" && cp.ContainerPort == num) {
						ok = true
						if cp.ContainerPort != sp.Port {
							t.Errorf("%s: port %q is %d but the container port is %d (hostNetwork pods are reached on the container port)", svc, sp.Name, sp.Port, cp.ContainerPort)
						}
					}
				}
			}
			if !ok {
				t.Errorf("%s: port %q: targetPort %s is no container port of the selected pods", svc, sp.Name, sp.TargetPort)
			}
		}
	}
}
