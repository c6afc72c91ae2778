package clustertest

import (
	"os"
	"testing"
)

// TestMain removes the ipamd binary clustertest built for this package's
// tests once they have all run.
func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinaries()
	os.Exit(code)
}
