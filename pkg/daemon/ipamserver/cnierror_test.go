package ipamserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// TestCNIErrorTable is the spec of the one table from a failure to a CNI
// code: every allocator kind (the allocator's tests check which kind each
// failure is), CNI errors of the config layer, the deadline, and the
// store's errors. The codes are the ones runtimes have always seen.
func TestCNIErrorTable(t *testing.T) {
	deadline := fmt.Errorf("wait for the node's allocation lock: %w", context.DeadlineExceeded)
	tests := []struct {
		name    string
		err     error
		code    uint
		msg     string
		details string
		etcd    bool
	}{
		{"invalid", &allocator.Error{Kind: allocator.KindInvalid, Msg: "requested address 10.0.0.1 is not in the pool"}, types.ErrInvalidNetworkConfig, "requested address 10.0.0.1 is not in the pool", "", false},
		{"foreign", &allocator.Error{Kind: allocator.KindForeign, Msg: "attachment n/c/eth0 belongs to node node1", Details: "two nodes", Owner: "node1"}, types.ErrInvalidNetworkConfig, "attachment n/c/eth0 belongs to node node1", "two nodes", false},
		{"exhausted", &allocator.Error{Kind: allocator.KindExhausted, Msg: "no address available in pool"}, types.ErrTryAgainLater, "no address available in pool", "", false},
		{"taken", &allocator.Error{Kind: allocator.KindTaken, Msg: "requested address ::5 is in use"}, types.ErrTryAgainLater, "requested address ::5 is in use", "", false},
		{"no prefix", &allocator.Error{Kind: allocator.KindNoPrefix, Msg: "waiting for a delegated prefix on uplink0"}, types.ErrTryAgainLater, "waiting for a delegated prefix on uplink0", "", false},
		{"not found", &allocator.Error{Kind: allocator.KindNotFound, Msg: "no addresses are allocated to n/c/eth0"}, types.ErrUnknownContainer, "no addresses are allocated to n/c/eth0", "", false},
		{"unavailable", &allocator.Error{Kind: allocator.KindUnavailable, Msg: "etcd unavailable: x", Err: deadline}, types.ErrPluginNotAvailable, "etcd unavailable: x", "", false},
		{"fenced", &allocator.Error{Kind: allocator.KindFenced, Msg: "node n1: node registration fenced"}, types.ErrTryAgainLater, "node n1: node registration fenced", "", false},
		{"orphans", &allocator.Error{Kind: allocator.KindUnavailable, Msg: "node n1 was removed at T; 1 attachment(s) lost their addresses: delete and re-create these pods"}, types.ErrPluginNotAvailable, "node n1 was removed at T; 1 attachment(s) lost their addresses: delete and re-create these pods", "", false},
		{"degraded", &allocator.Error{Kind: allocator.KindDegraded, Msg: "1 container(s) lost"}, types.ErrLimitedConnectivity, "1 container(s) lost", "", false},
		{"unknown kind is a bug", &allocator.Error{Kind: 99, Msg: "m"}, types.ErrInternal, "m", "", false},
		{"wrapped allocator error", fmt.Errorf("ctx: %w", &allocator.Error{Kind: allocator.KindTaken, Msg: "t"}), types.ErrTryAgainLater, "t", "", false},
		{"config layer", types.NewError(types.ErrDecodingFailure, "decode request: x", "d"), types.ErrDecodingFailure, "decode request: x", "d", false},
		{"deadline", deadline, types.ErrTryAgainLater, "no answer within " + EtcdTimeout.String() + ": wait for the node's allocation lock: context deadline exceeded", "", true},
		{"store", fmt.Errorf("read handle n/c/eth0: %w", errors.New("etcdserver: no leader")), types.ErrTryAgainLater, "etcd: read handle n/c/eth0: etcdserver: no leader", "", true},
		{"store exists", fmt.Errorf("%w (and reading it back: %v)", store.ErrExists, nil), types.ErrTryAgainLater, "etcd: already exists (and reading it back: <nil>)", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, etcd := cniError(tt.err)
			if got.Code != tt.code || got.Msg != tt.msg || got.Details != tt.details || etcd != tt.etcd {
				t.Errorf("cniError = %d %q %q etcd=%v, want %d %q %q etcd=%v", got.Code, got.Msg, got.Details, etcd, tt.code, tt.msg, tt.details, tt.etcd)
			}
		})
	}
}

// TestAttachmentValidated: ipamd checks what the plugin says about the
// attachment (code 7 naming the field) and applies the mode.
func TestAttachmentValidated(t *testing.T) {
	const conf64 = `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48"}]]}}`
	const conf80 = `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"ipam-v6","ranges":[[{"subnet":"2001:db8::/48","blockSize":80}]]}}`
	body := func(conf, attachment string) string {
		return `{"network":"n","containerID":"abc","ifName":"eth0","config":` + conf + `,"attachment":` + attachment + `}`
	}
	tests := []struct {
		name       string
		body       string
		code       uint // 0: accepted
		want       []string
		mode       string
		bridge     string
		mac        string
		addressing string
	}{
		{"none", `{"network":"n","containerID":"abc","ifName":"eth0","config":` + conf64 + `}`, 0, nil, "", "", "", "sequential"},
		{"static with a MAC", body(conf64, `{"ipv6Mode":"static","mac":"02:00:00:00:00:01"}`), 0, nil, "", "", "02:00:00:00:00:01", "sequential"},
		{"slaac", body(conf64, `{"bridge":"br0","ipv6Mode":"slaac","mac":"02:00:00:00:00:01"}`), 0, nil, "slaac", "br0", "02:00:00:00:00:01", "eui64"},
		{"dhcpv6-stateful", body(conf64, `{"bridge":"br0","ipv6Mode":"dhcpv6-stateful","mac":"02:00:00:00:00:01"}`), 0, nil, "dhcpv6-stateful", "br0", "02:00:00:00:00:01", "sequential"},
		{"unknown mode", body(conf64, `{"bridge":"br0","ipv6Mode":"magic","mac":"02:00:00:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"attachment.ipv6Mode", "magic", "dhcpv6-stateful"}, "", "", "", ""},
		{"mode a number", body(conf64, `{"ipv6Mode":6}`), types.ErrDecodingFailure, []string{"ipv6Mode"}, "", "", "", ""},
		{"bad MAC", body(conf64, `{"bridge":"br0","ipv6Mode":"slaac","mac":"zz"}`), types.ErrInvalidNetworkConfig, []string{"attachment.mac", "zz"}, "", "", "", ""},
		{"8-byte MAC", body(conf64, `{"mac":"02:00:00:00:00:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"attachment.mac"}, "", "", "", ""},
		{"multicast MAC", body(conf64, `{"mac":"01:00:5e:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"attachment.mac"}, "", "", "", ""},
		{"zero MAC", body(conf64, `{"mac":"00:00:00:00:00:00"}`), types.ErrInvalidNetworkConfig, []string{"attachment.mac"}, "", "", "", ""},
		{"no MAC", body(conf64, `{"bridge":"br0","ipv6Mode":"slaac"}`), types.ErrInvalidNetworkConfig, []string{"attachment.mac", "required"}, "", "", "", ""},
		{"no bridge", body(conf64, `{"ipv6Mode":"dhcpv6-stateless","mac":"02:00:00:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"attachment.bridge", "required"}, "", "", "", ""},
		{"bridge too long", body(conf64, `{"bridge":"abcdefghijklmnopq","ipv6Mode":"slaac","mac":"02:00:00:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"attachment.bridge", "abcdefghijklmnopq"}, "", "", "", ""},
		{"bridge with slash", body(conf64, `{"bridge":"a/b"}`), types.ErrInvalidNetworkConfig, []string{"attachment.bridge"}, "", "", "", ""},
		{"bridge with NUL", body(conf64, `{"bridge":"a\u0000"}`), types.ErrInvalidNetworkConfig, []string{"attachment.bridge"}, "", "", "", ""},
		{"slaac with /80 blocks", body(conf80, `{"bridge":"br0","ipv6Mode":"slaac","mac":"02:00:00:00:00:01"}`), types.ErrInvalidNetworkConfig, []string{"ipam.ranges[0][0].blockSize", "80", "slaac"}, "", "", "", ""},
		{"stateful with /80 blocks", body(conf80, `{"bridge":"br0","ipv6Mode":"dhcpv6-stateful","mac":"02:00:00:00:00:01"}`), 0, nil, "dhcpv6-stateful", "br0", "02:00:00:00:00:01", "sequential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := decode(httptest.NewRequest("POST", ipamapi.PathAdd, bytes.NewReader([]byte(tt.body))))
			var req allocator.Request
			if err == nil {
				req, err = addRequest(c)
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if req.Mode != tt.mode || req.Bridge != tt.bridge || req.MAC.String() != tt.mac || string(c.conf.IPAM.Addressing) != tt.addressing {
					t.Errorf("request mode %q bridge %q MAC %q addressing %q, want %q %q %q %q",
						req.Mode, req.Bridge, req.MAC, c.conf.IPAM.Addressing, tt.mode, tt.bridge, tt.mac, tt.addressing)
				}
				return
			}
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code != tt.code {
				t.Fatalf("error %v, want CNI error %d", err, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(ce.Msg, w) {
					t.Errorf("message %q does not name %q", ce.Msg, w)
				}
			}
		})
	}
}
