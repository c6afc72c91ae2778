package ipamserver

import (
	"bytes"
	"errors"
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
