// Package dhcp6pd is a DHCPv6 prefix delegation client (RFC 8415, IA_PD
// only) for one uplink interface.
//
// It is built in three layers that never mix: a pure wire codec
// (message.go), a state machine that does no I/O and reads no clock
// (machine.go, timers.go), and a driver (Client.Run) with one UDP socket on
// [link-local%IFACE]:546 (conn.go).
//
//	c, err := dhcp6pd.New(dhcp6pd.Config{
//		Interface: "eth1",
//		Persister: store,            // e.g. etcd: a restart Renews instead of Soliciting
//		OnChange:  func(b dhcp6pd.Binding) { /* add/remove blocks, BGP */ },
//	})
//	go c.Run(ctx)                     // until ctx ends; no Release on a plain stop
//	...
//	c.Release(ctx)                     // on purpose only
//
// OnChange receives the whole binding each time: the prefixes in
// Binding.Valid(now) may still be used, new addresses come only from
// Binding.Usable(now) (not yet deprecated).
package dhcp6pd
