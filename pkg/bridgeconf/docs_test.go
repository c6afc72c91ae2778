package bridgeconf

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// acceptedKeys are the JSON keys of rawConf's own fields, plus "ipam" (the
// one CNI standard key the README's table documents; the others, from the
// embedded types.PluginConf, are described in prose).
func acceptedKeys(t *testing.T) map[string]bool {
	t.Helper()
	keys := map[string]bool{"ipam": true}
	rt := reflect.TypeOf(rawConf{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			t.Fatalf("rawConf.%s has no JSON key", f.Name)
		}
		keys[name] = true
	}
	return keys
}

// documentedKeys are the keys in the first column of the README's config
// table: the table whose header starts "| key |", up to its end.
func documentedKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	cell := regexp.MustCompile("^`([^`]+)`$")
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "| key |") {
			in = true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		first := strings.TrimSpace(strings.Split(line, "|")[1])
		if strings.Trim(first, "-") == "" {
			continue // the separator row
		}
		m := cell.FindStringSubmatch(first)
		if m == nil {
			t.Errorf("%s: config table row without a `key` in its first column: %q", path, line)
			continue
		}
		keys[m[1]] = true
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no config table (a header starting \"| key |\")", path)
	}
	return keys
}

// TestKeysDocumented: every key bridgeconf accepts is in the key table of
// plugins/bridge-v6/README.md, and every key there is accepted.
func TestKeysDocumented(t *testing.T) {
	const readme = "../../plugins/bridge-v6/README.md"
	accepted := acceptedKeys(t)
	docs := documentedKeys(t, readme)
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
		t.Errorf("keys bridgeconf accepts but %s's table does not document: %v", readme, undocumented)
	}
	if len(unknown) > 0 {
		t.Errorf("keys documented in %s's table that bridgeconf does not accept: %v", readme, unknown)
	}
}
