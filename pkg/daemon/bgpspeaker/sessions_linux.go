package bgpspeaker

import (
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// shutdownSessions shuts down (both directions) every connected TCP
// socket of this process for which match(local, remote) is true, and
// returns how many. GoBGP owns the sockets and offers no way to drop a
// session without a NOTIFICATION; shutdown(2) on its descriptor makes the
// kernel send a FIN — what peers see when a speaker process exits — and
// GoBGP's reader sees EOF. The descriptor itself stays GoBGP's to close.
func shutdownSessions(match func(local, remote netip.AddrPort) bool) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		pa, err := unix.Getpeername(fd) // fails on listeners and unconnected sockets
		if err != nil {
			continue
		}
		local, ok1 := sockaddrAddrPort(sa)
		remote, ok2 := sockaddrAddrPort(pa)
		if !ok1 || !ok2 || !match(local, remote) {
			continue
		}
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err == nil {
			n++
		}
	}
	return n, nil
}

func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch a := sa.(type) {
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), true
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), true
	}
	return netip.AddrPort{}, false
}
