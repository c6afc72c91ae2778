package ipamconf

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestParseRefusesHostileInput covers what the integration corpus
// (integration/badinput_corpus_test.go) found ipam-v6 accepting or
// answering slowly: each is refused with its code and the field's name.
func TestParseRefusesHostileInput(t *testing.T) {
	const ok = `"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48"}]]}`
	many := func(n int, sets bool) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			r := fmt.Sprintf(`{"subnet":"fd%02x:%x::/32"}`, i>>8&0xff, i&0xffff)
			if sets {
				r = "[" + r + "]"
			}
			b.WriteString(r)
		}
		if sets {
			return `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[` + b.String() + `]}}`
		}
		return `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[` + b.String() + `]]}}`
	}
	tests := []struct {
		name string
		json string
		code uint
		want []string
	}{
		{"duplicate name", `{` + ok + `,"name":"m"}`, types.ErrDecodingFailure, []string{"name", "duplicate"}},
		{"duplicate nested key", `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","subnet":"2001:db9::/48"}]]}}`,
			types.ErrDecodingFailure, []string{"ipam.ranges[0][0].subnet", "duplicate"}},
		{"trailing document", `{` + ok + `}{}`, types.ErrDecodingFailure, []string{"network config"}},
		{"larger than the limit", `{` + ok + `,"junk":"` + strings.Repeat("x", MaxConfigSize) + `"}`, types.ErrDecodingFailure, []string{"larger than"}},
		{"name 10 kB", `{"cniVersion":"1.1.0","name":"` + strings.Repeat("a", 10240) + `","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}`,
			types.ErrInvalidNetworkConfig, []string{"name", "10240 bytes"}},
		{"exclude the whole subnet", `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","exclude":["2001:db8::/48"]}]]}}`,
			types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].exclude[0]", "2001:db8::/48", "whole subnet"}},
		{"5000 range sets", many(5000, true), types.ErrInvalidNetworkConfig, []string{"ipam.ranges", "5000"}},
		{"1000 ranges in a set", many(1000, false), types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0]", "1000"}},
		{"overlap far apart in the list", `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}],[{"subnet":"fd00::/48"}],[{"subnet":"2001:db8:0:1::/64"}]]}}`,
			types.ErrInvalidNetworkConfig, []string{"2001:db8::/48", "2001:db8:0:1::/64", "overlaps"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			var ce *types.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse: %v, want CNI error %d", err, tt.code)
			}
			if ce.Code != tt.code {
				t.Fatalf("code %d %q, want %d", ce.Code, ce.Msg, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(ce.Msg, w) {
					t.Errorf("message %q does not name %q", ce.Msg, w)
				}
			}
			if len(ce.Msg) > 512 {
				t.Errorf("message of %d bytes: it must not echo a huge value", len(ce.Msg))
			}
		})
	}
}

// TestDuplicateKeyAllowsRepeatsAcrossObjects: the same key in sibling
// objects is no duplicate.
func TestDuplicateKeyAllowsRepeatsAcrossObjects(t *testing.T) {
	for _, doc := range []string{
		`{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}`,
		`{"a":[[],[{}],{"a":{"a":1}}],"b":"a"}`,
		`[]`, `"s"`, `{}`,
	} {
		if p, err := duplicateKey([]byte(doc)); p != "" || err != nil {
			t.Errorf("%s: duplicate %q, err %v; want none", doc, p, err)
		}
	}
	if p, _ := duplicateKey([]byte(`{"a":[1,{"b":{"c":1,"c":2}}]}`)); p != "a[1].b.c" {
		t.Errorf("path %q, want a[1].b.c", p)
	}
}
