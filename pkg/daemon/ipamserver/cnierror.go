package ipamserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
)

// kindCodes is the CNI code of each kind of allocator failure.
var kindCodes = map[allocator.Kind]uint{
	// The request cannot succeed as sent: the runtime must not retry.
	allocator.KindInvalid: types.ErrInvalidNetworkConfig,
	// The call's identity (network, container ID, interface) conflicts
	// with another node's attachment: retrying cannot help.
	allocator.KindForeign: types.ErrInvalidNetworkConfig,
	// Addresses may be freed, a block released, a prefix delegated: later.
	allocator.KindExhausted: types.ErrTryAgainLater,
	allocator.KindTaken:     types.ErrTryAgainLater,
	allocator.KindNoPrefix:  types.ErrTryAgainLater,
	// The node's registration is being renewed after a removal.
	allocator.KindFenced:   types.ErrTryAgainLater,
	allocator.KindNotFound: types.ErrUnknownContainer,
	// STATUS's verdicts.
	allocator.KindUnavailable: types.ErrPluginNotAvailable,
	allocator.KindDegraded:    types.ErrLimitedConnectivity,
}

// cniError is the one table from a failure to the CNI error the runtime
// sees. In order:
//
//   - an allocator failure (*allocator.Error): the code of its kind
//     (kindCodes; an unknown kind is 999, a bug), its message and details;
//   - a CNI error (from the config layer: ipamconf, the request decoder,
//     Routing, Services): as it is;
//   - the request's deadline (in etcd, or waiting behind other requests
//     for the node's lock; the error says which): 11, "no answer within";
//   - anything else: 11, "etcd: …". The allocator types every failure it
//     decides, so what is left comes from the store: etcd unreachable, no
//     quorum, a cancelled call, a record that does not decode. The state is
//     there but could not be read or written now: the runtime retries.
//
// etcd reports the last two, which the etcd error metric counts.
func cniError(err error) (cerr *types.Error, etcd bool) {
	var ae *allocator.Error
	if errors.As(err, &ae) {
		code, ok := kindCodes[ae.Kind]
		if !ok {
			code = types.ErrInternal
		}
		return types.NewError(code, ae.Msg, ae.Details), false
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te, false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("no answer within %s: %v", EtcdTimeout, err), ""), true
	}
	return types.NewError(types.ErrTryAgainLater, "etcd: "+err.Error(), ""), true
}
