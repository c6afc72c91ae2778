package faults

import (
	"os"
	"testing"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
)

// TestMain removes the ipamd binary clustertest built for this package's
// tests once they have all run.
func TestMain(m *testing.M) {
	code := m.Run()
	clustertest.RemoveBinaries()
	os.Exit(code)
}
