package ipamserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// FuzzDecode feeds arbitrary request bodies to the decoder of every verb:
// it must never panic, and must either accept a request whose attachment is
// valid or reject it with a CNI error.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"network":"v6net","containerID":"abc","ifName":"eth0","config":{"name":"v6net","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}}`))
	f.Add([]byte(`{"network":"x","containerID":"../../etc","ifName":"eth0/1","config":{"name":"x","ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}]]}}}`))
	f.Add([]byte(`{"config":null}`))
	f.Add([]byte(`[]`))
	paths := []string{ipamapi.PathAdd, ipamapi.PathDel, ipamapi.PathCheck, ipamapi.PathStatus, ipamapi.PathGC, ipamapi.PathState}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, p := range paths {
			c, err := decode(httptest.NewRequest("POST", p, bytes.NewReader(body)))
			if err != nil {
				var te *types.Error
				if !errors.As(err, &te) || te.Code == 0 {
					t.Fatalf("%s: error %v is not a CNI error", p, err)
				}
				continue
			}
			if p == ipamapi.PathAdd || p == ipamapi.PathDel || p == ipamapi.PathCheck {
				if c.id.ContainerID == "" || c.id.IfName == "" || c.id.Network == "" || c.conf == nil {
					t.Fatalf("%s: accepted an incomplete attachment %+v", p, c.id)
				}
				if bytes.ContainsAny([]byte(c.id.ContainerID+c.id.IfName+c.id.Network), "/\x00") {
					t.Fatalf("%s: accepted a key-breaking name %+v", p, c.id)
				}
			}
		}
	})
}

// FuzzHandler drives ipamd's real request handler (Server.handle: body
// limit, decode, config parsing, CNI error encoding) and ADD's input
// parsing (addRequest: arguments and the attachment the plugin describes),
// stopping short of the allocator. For every body
// and verb: no panic, and the answer is 200 or a CNI error object with a
// client-side code (1–7) naming what is wrong — never 11, which would make
// a runtime retry input that cannot succeed.
func FuzzHandler(f *testing.F) {
	for _, s := range handlerSeeds {
		f.Add(uint8(0), []byte(s))
		f.Add(uint8(1), []byte(s))
	}
	srv := New(nil, nil, slog.New(slog.DiscardHandler))
	paths := []string{ipamapi.PathAdd, ipamapi.PathDel, ipamapi.PathCheck, ipamapi.PathStatus, ipamapi.PathGC}
	f.Fuzz(func(t *testing.T, verb uint8, body []byte) {
		path := paths[int(verb)%len(paths)]
		h := srv.handle(func(_ context.Context, c *call) (any, error) {
			if path != ipamapi.PathAdd {
				return nil, nil
			}
			_, err := addRequest(c)
			if err != nil {
				var te *types.Error
				if !errors.As(err, &te) {
					t.Fatalf("addRequest: %v (%T) is not a CNI error", err, err)
				}
			}
			return nil, err
		})
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest("POST", path, bytes.NewReader(body)))
		if w.Code == http.StatusOK {
			return
		}
		var ce types.Error
		if err := json.Unmarshal(w.Body.Bytes(), &ce); err != nil {
			t.Fatalf("%s: status %d, body %q is not a CNI error: %v", path, w.Code, w.Body.Bytes(), err)
		}
		if ce.Code < 1 || ce.Code > 7 {
			t.Fatalf("%s: code %d %q for bad input, want 1..7", path, ce.Code, ce.Msg)
		}
		if ce.Msg == "" {
			t.Fatalf("%s: code %d without a message", path, ce.Code)
		}
	})
}

// handlerSeeds are request bodies from the integration corpus
// (integration/badinput_corpus_test.go) and good ones to mutate.
var handlerSeeds = []string{
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48","blockSize":64}]]}}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","args":"IP=2001:db8::5;IgnoreUnknown=1","config":{"cniVersion":"1.1.0","name":"n","type":"bridge-v6","ipv6Mode":"slaac","runtimeConfig":{"ips":["2001:db8::9"],"mac":"02:00:00:00:00:01"},"ipam":{"type":"ipam-v6","addressing":"eui64","ranges":[[{"subnet":"2001:db8::/48"}],[{"subnet":"10.1.0.0/16"}]]}}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"cniVersion":"1.1.0","name":"n","ipam":{"type":"pd-ipam","subnetId":3,"routes":[{"dst":"::/0"}],"dns":{"nameservers":["2001:db8::53"]}}}}`,
	`{"network":"n","containerID":"abc","containerID":"x","ifName":"eth0","config":{"name":"n"}}`,
	`{"network":"n","containerID":"a\u0000b","ifName":"e\u0000","netns":"/run/netns/a\u0000","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}}`,
	`{"network":"n","containerID":"../../etc","ifName":"..","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::1/48","blockSize":"64","exclude":"x"}]]}}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","exclude":["2001:db8::/48"]}],[{"subnet":"2001:db8::/64"}]]}}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48","blockSize":120,"exclude":["2001:db8::/64"]}]]}}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","args":"garbage;=x","config":{"name":"n","args":{"cni":{"ips":["::zz"]}},"cni.dev/valid-attachments":"all","prevResult":"x","ipam":{"ranges":[[{"subnet":"fe80::/64"}]],"stickyGrace":"-5m","bgpCommunities":["65536:1"]}}}`,
	`{"config":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"network":5}`, `null`, `[]`, `"x"`, ``, `{"network":"n","config":{"name":"n","ipam":{}}}{}`,
	// The attachment the plugin describes (bridge-v6's bridge, ipv6Mode, MAC).
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48"}]]}},"attachment":{"bridge":"v6cni0","ipv6Mode":"slaac","mac":"02:00:00:00:00:01"}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","addressing":"eui64","ranges":[[{"subnet":"2001:db8::/48"}]]}},"attachment":{"mac":"fa:16:3e:79:5a:cc"}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48","blockSize":96}]]}},"attachment":{"bridge":"br0","ipv6Mode":"dhcpv6-stateless","mac":"02:00:00:00:00:01"}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}},"attachment":{"bridge":"a/b\u0000","ipv6Mode":"magic","mac":"ff:ff:ff:ff:ff:ff"}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}},"attachment":{"ipv6Mode":6,"mac":[]}}`,
	`{"network":"n","containerID":"abc","ifName":"eth0","config":{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}},"attachment":null,"attachment":{}}`,
}
