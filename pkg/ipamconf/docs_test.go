package ipamconf

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// jsonKeys lists the JSON keys of a struct type and of the structs (and
// slices of structs) inside it.
func jsonKeys(t reflect.Type, into map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		into[name] = true
		jsonKeys(f.Type, into)
	}
}

// documentedKeys are the keys in the first column of the README's config
// table: `ranges[][].subnet` documents "subnet"; a row may list several.
func documentedKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	cell := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			k := m[1]
			if i := strings.LastIndex(k, "."); i >= 0 {
				k = k[i+1:]
			}
			keys[k] = true
		}
	}
	return keys
}

// TestIPAMKeysDocumented: every key ipam-v6 and pd-ipam accept is in their
// READMEs' tables, and every key there is accepted.
func TestIPAMKeysDocumented(t *testing.T) {
	accepted := map[string]bool{}
	raw := reflect.TypeOf(rawConf{}).Field(2) // IPAM
	if raw.Name != "IPAM" {
		t.Fatalf("rawConf field 2 is %s, want IPAM", raw.Name)
	}
	jsonKeys(raw.Type, accepted)
	// The members of dns are CNI's, documented as one row.
	for _, k := range []string{"nameservers", "domain", "search", "options"} {
		delete(accepted, k)
	}
	docs := documentedKeys(t, "../../plugins/ipam-v6/README.md")
	for k := range documentedKeys(t, "../../plugins/pd-ipam/README.md") {
		docs[k] = true
	}
	var undocumented, unknown []string
	for k := range accepted {
		if !docs[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range docs {
		if !accepted[k] {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unknown)
	if len(undocumented) > 0 {
		t.Errorf("ipam keys the code accepts but plugins/{ipam-v6,pd-ipam}/README.md does not document: %v", undocumented)
	}
	if len(unknown) > 0 {
		t.Errorf("keys documented in plugins/{ipam-v6,pd-ipam}/README.md that the code does not accept: %v", unknown)
	}
}
