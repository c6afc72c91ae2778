package ipamapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		status   int
		body     string
		err      string
	}{
		{"content length", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, "{}", ""},
		{"to EOF", "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"code\":11}", 503, `{"code":11}`, ""},
		{"not HTTP", "SSH-2.0-x\r\n\r\n", 0, "", "bad status line"},
		{"bad length", "HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", 0, "", "bad Content-Length"},
		{"short body", "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}", 0, "", "body"},
		{"no headers end", "HTTP/1.0 200 OK\r\nX: y", 0, "", "headers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := readResponse(bufio.NewReader(strings.NewReader(tc.in)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || status != tc.status || string(body) != tc.body {
				t.Fatalf("= %d %q %v; want %d %q", status, body, err, tc.status, tc.body)
			}
		})
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n{\"code\":7,\"msg\":\"x\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		status, body, err := readResponse(bufio.NewReader(strings.NewReader(string(data))))
		if err == nil && (len(body) > maxBody || status < 0) {
			t.Fatalf("accepted %d, %d bytes", status, len(body))
		}
	})
}

// TestClientAgainstNetHTTP: the hand-written client talks to a real
// net/http server (as ipamd runs) on a unix socket, small and large bodies,
// success and CNI errors; an absent socket is code 11 naming it.
func TestClientAgainstNetHTTP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathState, func(w http.ResponseWriter, r *http.Request) {
		st := State{Node: "n1"}
		for i := range 5000 { // a big body: streamed, not one buffer
			st.Networks = append(st.Networks, NetworkState{Network: strings.Repeat("x", 20), Pool: string(rune('a' + i%26))})
		}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST "+PathAdd, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(types.NewError(7, "ipam.ranges: missing", ""))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := NewClient(sock)
	st, err := c.State(context.Background())
	if err != nil || st.Node != "n1" || len(st.Networks) != 5000 {
		t.Fatalf("State = %v networks, %v", len(st.Networks), err)
	}
	_, err = c.Add(context.Background(), &Request{Network: "n"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 7 || te.Msg != "ipam.ranges: missing" {
		t.Fatalf("Add = %v, want CNI error 7", err)
	}
	err = NewClient(filepath.Join(t.TempDir(), "none.sock")).Del(context.Background(), &Request{})
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "none.sock") {
		t.Fatalf("absent socket: %v", err)
	}
}
