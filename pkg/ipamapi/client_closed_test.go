package ipamapi

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestClientIpamdGoneMidRequest: ipamd reads the request and then dies
// (kill -9, crash, OOM) or never answers. The runtime must see code 11 (try
// again later), not 5: the call's outcome is unknown and a retry is what
// resolves it (ADD is idempotent, DEL tolerates absence). A reply that is
// not HTTP stays a hard error.
func TestClientIpamdGoneMidRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(c net.Conn)
		want  uint
	}{
		{"closed before status", func(c net.Conn) { c.Close() }, types.ErrTryAgainLater},
		{"closed in headers", func(c net.Conn) { c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Le")); c.Close() }, types.ErrTryAgainLater},
		{"closed in body", func(c net.Conn) { c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n{")); c.Close() }, types.ErrTryAgainLater},
		{"no answer by the deadline", func(c net.Conn) { time.Sleep(2 * time.Second); c.Close() }, types.ErrTryAgainLater},
		{"not HTTP", func(c net.Conn) { c.Write([]byte("SSH-2.0-x\r\n")); c.Close() }, types.ErrIOFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, 4096)
				c.Read(buf)
				tc.reply(c)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err = NewClient(sock).Del(ctx, &Request{Network: "n", ContainerID: "c", IfName: "eth0"})
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.want {
				t.Fatalf("err = %v, want CNI code %d", err, tc.want)
			}
		})
	}
}
