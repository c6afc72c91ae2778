package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/v6cni/v6cni/internal/testutil/clustertest"
	"github.com/v6cni/v6cni/pkg/ipamapi"
)

// embeddedIpamd is one `ipamd serve` with its embedded etcd in dataDir.
type embeddedIpamd struct {
	t       *testing.T
	args    []string
	logPath string
	client  *ipamapi.Client
	cmd     *exec.Cmd
	done    chan struct{}
}

func (d *embeddedIpamd) start() error {
	f, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(clustertest.IpamdBinary(d.t), d.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(d.done)
	for deadline := time.Now().Add(60 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.client.Health(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("ipamd exited while starting: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipamd not ready after 60s: %v", err)
		}
	}
}

// exited reports whether the process has ended.
func (d *embeddedIpamd) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *embeddedIpamd) kill() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	d.cmd = nil
}

// TestEmbeddedEtcdDiskFull runs ipamd with its embedded etcd on a small
// tmpfs and fills the tmpfs while ADDs go on. Every ADD is answered within
// the deadline — success while etcd still has room, a retryable code once
// it has none — and once space is freed (and ipamd restarted if it had to
// stop), ADDs succeed again and the key space is consistent: the runtime
// DELs everything and nothing is left.
func TestEmbeddedEtcdDiskFull(t *testing.T) {
	requireRoot(t)
	f := newFigures(t)
	dir, err := os.MkdirTemp("", "h6df-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mnt := filepath.Join(dir, "m")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	// etcd preallocates its 64 MiB WAL segment, and its file pipeline may
	// preallocate the next one (another 64 MiB) at any time after start: 80
	// MiB was sometimes full before ipamd served (make test, loaded machine).
	// The size does not matter beyond that: the test fills what is left.
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=192m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	sock := filepath.Join(dir, "s.sock")
	d := &embeddedIpamd{t: t, logPath: filepath.Join(dir, "ipamd.log"), client: ipamapi.NewClient(sock),
		args: []string{"serve", "--node-name", "df-node", "--socket", sock, "--data-dir", filepath.Join(mnt, "data")}}
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("ipamd log (tail):\n%s", b)
		}
	})
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	const network = "faults-disk"
	conf := netConf(t, network, "fd00:f3::/48")
	var made []string
	add := func(cid string) (uint, error) {
		made = append(made, cid)
		code, dur, err := call(f, "ADD", func(ctx context.Context) error {
			_, err := d.client.Add(ctx, request(network, cid, conf))
			return err
		})
		if dur > deadline {
			t.Errorf("ADD %s answered after %s", cid, dur)
		}
		if code != 0 && !retryable(code) {
			t.Errorf("ADD %s: code %d (%v), want success or 11/50", cid, code, err)
		}
		return code, err
	}
	for i := range 3 {
		if code, err := add(fmt.Sprintf("before-%d", i)); code != 0 {
			t.Fatalf("ADD before the disk filled: %v", err)
		}
	}

	// Fill the tmpfs to the last byte.
	filler := filepath.Join(mnt, "filler")
	ff, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := ff.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	for {
		if _, err := ff.Write(chunk[:512]); err != nil {
			break
		}
	}
	ff.Close()
	f.fault("disk full")

	// ADDs until etcd refuses (bounded: the WAL segment may still have
	// room for many small entries).
	failed := 0
	for i := 0; i < 300 && failed < 3; i++ {
		code, err := add(fmt.Sprintf("full-%d", i))
		if code != 0 {
			failed++
			t.Logf("disk full: ADD %d: code %d: %v", i, code, errOrEmpty(err))
		}
		if code != 0 {
			// A refused request may be ipamd going down: give it a moment.
			select {
			case <-d.done:
			case <-time.After(time.Second):
			}
		}
		if d.exited() {
			t.Logf("disk full: ipamd exited after %d ADDs: %v", i+1, d.cmd.ProcessState)
			break
		}
	}
	t.Logf("disk full: %d ADDs answered, %d refused, ipamd running: %v", len(made)-3, failed, !d.exited())

	// Free the space; ipamd (restarted if it stopped) serves again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if d.exited() {
		f.fault("ipamd exited on disk full")
		// An operator must be able to tell why: the log says it, not
		// only an exit status.
		b, _ := os.ReadFile(d.logPath)
		i := strings.Index(string(b), "no space left on device")
		if i < 0 {
			t.Errorf("ipamd exited (%v) on a full disk without saying why in its log", d.cmd.ProcessState)
		} else {
			line := string(b[:i])
			line = line[strings.LastIndexByte(line, '\n')+1:]
			t.Logf("ipamd's last words: %.300s", line+"no space left on device")
		}
		d.kill()
		if err := d.start(); err != nil {
			t.Fatalf("restart after freeing space: %v", err)
		}
	}
	var code uint
	for i := 0; i < 20; i++ {
		if code, err = add(fmt.Sprintf("freed-%d", i)); code == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 {
		t.Fatalf("ADD after freeing space: %v", err)
	}
	for _, cid := range made {
		code, dur, err := call(f, "DEL", func(ctx context.Context) error {
			return d.client.Del(ctx, request(network, cid, conf))
		})
		if code != 0 || dur > deadline {
			t.Errorf("DEL %s: code %d in %s: %v", cid, code, dur, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := d.client.Consistency(ctx)
	if err != nil {
		t.Fatalf("ipamd check: %v", err)
	}
	if len(cons.Problems) != 0 || cons.Addrs != 0 {
		t.Errorf("after DEL of all: %d addresses held, problems %v; want none", cons.Addrs, cons.Problems)
	}
}
