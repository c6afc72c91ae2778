// Package faults holds the fault-injection scenarios of issue 13: real
// faults (etcd behind a delaying, stalling and partitioned link, ipamd
// killed with SIGKILL at named steps of a request) against the real ipamd
// binary and Debian's etcd, each asserting what the runtime sees (CNI code,
// time to answer) and that the key space is consistent afterwards
// (store.Check). They need root only where they use namespaces; see the
// test files.
package faults
