package bridgeconf

import (
	"reflect"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/docstest"
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

// TestKeysDocumented: every key bridgeconf accepts is in the key table of
// plugins/bridge-v6/README.md, and every key there is accepted.
func TestKeysDocumented(t *testing.T) {
	const readme = "../../../plugins/bridge-v6/README.md"
	docstest.Compare(t, readme, acceptedKeys(t), docstest.TableKeys(t, readme))
}
