package clustertest

// AppendArgs adds flags to this ipamd's `serve` command line from its next
// Start on; a flag given twice takes the later value (Go's flag package),
// so a fault test can, for example, point one node's --etcd-endpoints at a
// relay that degrades the link.
func (n *Node) AppendArgs(args ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.args = append(n.args, args...)
}
