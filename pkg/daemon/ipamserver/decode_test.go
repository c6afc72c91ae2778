package ipamserver

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestDecodeRefusesHostileAttachments covers what the integration corpus
// found ipamd accepting straight on its socket: names that would reach
// etcd keys with a NUL or control byte, a 10 kB container ID, duplicate
// keys. Each is code 4 (the CNI_* variable) or 6, naming it.
func TestDecodeRefusesHostileAttachments(t *testing.T) {
	const conf = `{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/48"}]]}}`
	body := func(id, ifname, netns string) string {
		return `{"network":"n","containerID":"` + id + `","ifName":"` + ifname + `","netns":"` + netns + `","config":` + conf + `}`
	}
	tests := []struct {
		name string
		body string
		code uint
		want []string
	}{
		{"ifName with NUL", body("abc", `e\u0000`, ""), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME"}},
		{"ifName with newline", body("abc", `e\n`, ""), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME"}},
		{"ifName with DEL", body("abc", `e\u007f`, ""), types.ErrInvalidEnvironmentVariables, []string{"CNI_IFNAME"}},
		{"netns with NUL", body("abc", "eth0", `/run/netns/a\u0000`), types.ErrInvalidEnvironmentVariables, []string{"CNI_NETNS"}},
		{"containerID 10 kB", body(strings.Repeat("c", 10240), "eth0", ""), types.ErrInvalidEnvironmentVariables, []string{"CNI_CONTAINERID", "10240 bytes"}},
		{"duplicate containerID", `{"network":"n","containerID":"a","containerID":"b","ifName":"eth0","config":` + conf + `}`,
			types.ErrDecodingFailure, []string{"containerID", "duplicate"}},
		{"duplicate key in config", `{"network":"n","containerID":"a","ifName":"eth0","config":{"name":"n","name":"m","ipam":{}}}`,
			types.ErrDecodingFailure, []string{"name", "duplicate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode(httptest.NewRequest("POST", ipamapi.PathAdd, bytes.NewReader([]byte(tt.body))))
			var ce *types.Error
			if !errors.As(err, &ce) {
				t.Fatalf("decode: %v, want CNI error %d", err, tt.code)
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
				t.Errorf("message of %d bytes echoes the whole value", len(ce.Msg))
			}
		})
	}
}
