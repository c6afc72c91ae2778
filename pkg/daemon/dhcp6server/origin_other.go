//go:build !linux

package dhcp6server

import (
	"errors"
	"net"
)

var errTimeout = errors.New("no datagram yet")

type originConn struct{}

func listenOrigin(*net.Interface) (*originConn, error) {
	return nil, errors.New("the DHCPv6 server needs Linux packet sockets")
}

func (*originConn) close() {}

func (*originConn) read([]byte) ([]byte, Origin, error) { return nil, Origin{}, errTimeout }
