package delegate

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// script writes an executable plugin into dir.
func script(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestDelegate(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "good", `cat >/dev/null
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","ips":[{"address":"2001:db8::2/64","gateway":"2001:db8::1"}]}' ;;
*) echo "$CNI_COMMAND $CNI_CONTAINERID" >&2 ;;
esac`)
	script(t, dir, "cnierr", `cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"ipamd unreachable at /x.sock"}'; exit 1`)
	script(t, dir, "crash", `cat >/dev/null; echo boom >&2; exit 2`)
	t.Setenv("CNI_PATH", "/nonexistent:"+dir)
	t.Setenv("CNI_COMMAND", "ADD")
	t.Setenv("CNI_CONTAINERID", "c1")
	conf := []byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge-v6"}`)
	ctx := context.Background()

	res, err := Add(ctx, "good", conf)
	if err != nil {
		t.Fatal(err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) != 1 || r.IPs[0].Address.String() != "2001:db8::2/64" {
		t.Fatalf("Add = %+v, %v", r, err)
	}
	for _, f := range []func(context.Context, string, []byte) error{Del, Check, Status, GC} {
		if err := f(ctx, "good", conf); err != nil {
			t.Errorf("verb: %v", err)
		}
	}

	_, err = Add(ctx, "cnierr", conf)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 11 || !strings.Contains(te.Msg, "/x.sock") {
		t.Errorf("CNI error = %v, want the delegate's code 11 unchanged", err)
	}
	if err := Del(ctx, "crash", conf); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("crash = %v, want its stderr", err)
	}
	if _, err := Add(ctx, "absent", conf); err == nil || !strings.Contains(err.Error(), `"absent"`) {
		t.Errorf("absent = %v", err)
	}
	if _, err := Add(ctx, "../good", conf); err == nil || !strings.Contains(err.Error(), "without a path") {
		t.Errorf("path type = %v", err)
	}
	t.Setenv("CNI_PATH", "")
	if _, err := Add(ctx, "good", conf); !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables {
		t.Errorf("empty CNI_PATH = %v, want code 4", err)
	}
}

// TestFailingDelegateStderrKept: a delegate that fails with a CNI error
// on stdout also wrote why on stderr (v6cni's IPAM plugins write their
// log line there): it reaches this process's stderr, which the runtime
// keeps, instead of being dropped.
func TestFailingDelegateStderrKept(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "cnierr", `cat >/dev/null; echo 'ipam-v6 DEL: etcd slow' >&2; echo '{"cniVersion":"1.0.0","code":11,"msg":"try again"}'; exit 1`)
	t.Setenv("CNI_PATH", dir)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	err = Del(context.Background(), "cnierr", []byte(`{"cniVersion":"1.0.0","name":"n","type":"x"}`))
	os.Stderr = saved
	w.Close()
	out, rerr := io.ReadAll(r)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 11 {
		t.Errorf("Del = %v, want the delegate's code 11", err)
	}
	if !strings.Contains(string(out), "ipam-v6 DEL: etcd slow") {
		t.Errorf("stderr = %q, want the delegate's stderr", out)
	}
}
