package ipamconf

import (
	"reflect"
	"strings"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/docstest"
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
	// ipam-v6's README documents every key (subnetId as a delegated
	// range's); pd-ipam's documents subnetId and the keys it shares (its
	// ranges are ipam-v6's).
	v6, pd := map[string]bool{}, map[string]bool{}
	for k := range accepted {
		switch k {
		case "subnetId":
			v6[k], pd[k] = true, true
		case "ranges", "subnet", "blockSize", "exclude", "delegated", "dst", "gw":
			v6[k] = true
		default:
			v6[k], pd[k] = true, true
		}
	}
	const v6doc, pddoc = "../../plugins/ipam-v6/README.md", "../../plugins/pd-ipam/README.md"
	docstest.Compare(t, v6doc, v6, docstest.TableKeys(t, v6doc))
	docstest.Compare(t, pddoc, pd, docstest.TableKeys(t, pddoc))
}
