package bgpspeaker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPasswordSources: the TCP-MD5 password comes from the config, a file
// only its owner can read, or the environment; a more open file, two
// sources, or a missing variable are refused with an error naming the
// file or variable and never the secret.
func TestPasswordSources(t *testing.T) {
	const secret = "md5-s3cret"
	dir := t.TempDir()
	file := func(name string, mode os.FileMode, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("V6CNI_TEST_BGP_PW", secret)
	for _, tc := range []struct {
		name    string
		peer    string // JSON fields of the peer besides address and asn
		wantErr string // "" : want Password == secret
	}{
		{"inline", fmt.Sprintf(`"password": %q`, secret), ""},
		{"file 0600 with newline", fmt.Sprintf(`"passwordFile": %q`, file("pw600", 0o600, secret+"\n")), ""},
		{"file 0400", fmt.Sprintf(`"passwordFile": %q`, file("pw400", 0o400, secret)), ""},
		{"env", `"passwordEnv": "V6CNI_TEST_BGP_PW"`, ""},
		{"file 0644", fmt.Sprintf(`"passwordFile": %q`, file("pw644", 0o644, secret)), "has mode 0644"},
		{"file 0640", fmt.Sprintf(`"passwordFile": %q`, file("pw640", 0o640, secret)), "has mode 0640"},
		{"missing file", fmt.Sprintf(`"passwordFile": %q`, filepath.Join(dir, "none")), "no such file"},
		{"directory", fmt.Sprintf(`"passwordFile": %q`, dir), "not a regular file"},
		{"empty file", fmt.Sprintf(`"passwordFile": %q`, file("empty", 0o600, "")), "is empty"},
		{"unset env", `"passwordEnv": "V6CNI_TEST_BGP_PW_UNSET"`, `"V6CNI_TEST_BGP_PW_UNSET" is not set`},
		{"two sources", fmt.Sprintf(`"password": %q, "passwordEnv": "V6CNI_TEST_BGP_PW"`, secret), "give one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(fmt.Sprintf(`{"asn": 65001, "routerID": "10.0.0.1",
				"peers": [{"address": "2001:db8::1", "asn": 65000, %s}]}`, tc.peer)))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Peers[0].Password; got != secret {
					t.Fatalf("password %q, want %q", got, secret)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}
