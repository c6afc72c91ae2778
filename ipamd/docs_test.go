package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFlagsDocumented: every flag of `ipamd serve` is in README.md's flag
// table, and every flag there exists; every command is in the Syntax block.
func TestFlagsDocumented(t *testing.T) {
	var usage bytes.Buffer
	serve([]string{"-h"}, &usage)
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(usage.String(), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 10 {
		t.Fatalf("found only %d flags in serve's usage:\n%s", len(flags), usage.String())
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	if i := strings.Index(section, "### serve flags"); i >= 0 {
		section = section[i:]
	}
	if i := strings.Index(section, "### config file"); i >= 0 {
		section = section[:i]
	}
	var documented []string
	for _, m := range regexp.MustCompile("`--([a-z0-9-]+)`").FindAllStringSubmatch(section, -1) {
		documented = append(documented, m[1])
	}
	for _, f := range flags {
		if !slices.Contains(documented, f) {
			t.Errorf("flag --%s is not in ipamd/README.md's serve flags table", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(flags, f) {
			t.Errorf("ipamd/README.md documents --%s, which serve does not have", f)
		}
	}
	for _, cmd := range []string{"serve", "status", "pools", "blocks", "leases", "state", "gc", "release", "bgp", "pd", "version", "nodes", "node remove"} {
		if !strings.Contains(string(readme), "ipamd "+cmd) && !strings.Contains(string(readme), "ipamd ["+cmd+"]") {
			t.Errorf("command %q is not in ipamd/README.md", cmd)
		}
		if !strings.Contains(usageText(), cmd) {
			t.Errorf("command %q is not in ipamd's usage text", cmd)
		}
	}
}

func usageText() string { return usage }
