// Package docstest checks, in tests, that a component's README documents
// exactly the configuration keys its code accepts: every key in the table,
// and nothing in the table the code does not take.
package docstest

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var cell = regexp.MustCompile("`([^`]+)`")

// TableKeys are the keys in the first column of the README's key tables
// (tables whose header starts "| key |"). A cell may name several keys; a
// path such as `ranges[][].subnet` documents "subnet".
func TableKeys(t testing.TB, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "| key |"):
			in = true
			continue
		case !strings.HasPrefix(line, "|"):
			in = false
			continue
		case !in:
			continue
		}
		first := strings.TrimSpace(strings.Split(line, "|")[1])
		if strings.Trim(first, "-") == "" {
			continue // the separator row
		}
		ms := cell.FindAllStringSubmatch(first, -1)
		if ms == nil {
			t.Errorf("%s: key table row without a `key` in its first column: %q", path, line)
		}
		for _, m := range ms {
			k := m[1]
			if i := strings.LastIndex(k, "."); i >= 0 {
				k = k[i+1:]
			}
			keys[k] = true
		}
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no key table (a header starting \"| key |\")", path)
	}
	return keys
}

// Compare fails the test for every key accepted but not documented, and
// every key documented but not accepted.
func Compare(t testing.TB, docs string, accepted, documented map[string]bool) {
	t.Helper()
	var undocumented, unknown []string
	for k := range accepted {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !accepted[k] {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unknown)
	if len(undocumented) > 0 {
		t.Errorf("keys the code accepts that %s does not document: %v", docs, undocumented)
	}
	if len(unknown) > 0 {
		t.Errorf("keys %s documents that the code does not accept: %v", docs, unknown)
	}
}
