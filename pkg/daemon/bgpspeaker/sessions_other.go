//go:build !linux

package bgpspeaker

import (
	"errors"
	"net/netip"
)

func shutdownSessions(func(local, remote netip.AddrPort) bool) (int, error) {
	return 0, errors.ErrUnsupported
}
