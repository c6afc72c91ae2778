// Package layout holds no code, only the test that keeps v6cni's two worlds
// apart: the plugins, exec'd once per container, and ipamd, the daemon.
package layout
