package bgpspeaker

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParseConfig: the config decoder never panics, and whatever it
// accepts is valid and survives a JSON round trip unchanged.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"asn": 65001, "routerID": "10.0.0.1", "peers": [{"address": "2001:db8::1", "asn": 65000}]}`,
		`{"asn": 65001, "routerID": "10.0.0.1", "nextHopIPv4": "192.0.2.2", "communities": ["65001:1", "no-export"],
		  "gracefulRestart": {"enabled": false, "restartTime": 5},
		  "peers": [{"address": "192.0.2.1", "asn": 65000, "password": "x", "holdTime": 3, "multihop": 4}]}`,
		`{"asn": 1, "routerID": "::1", "peers": []}`,
		`{}`, `null`, `[]`, `{"asn": -1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("round trip rejected: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
		}
	})
}
