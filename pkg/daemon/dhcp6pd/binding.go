package dhcp6pd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Prefix is one delegated prefix with the lifetimes of the last Reply that
// mentioned it.
type Prefix struct {
	Prefix    netip.Prefix  `json:"prefix"`
	Preferred time.Duration `json:"preferred"` // Infinity: never deprecated
	Valid     time.Duration `json:"valid"`     // Infinity: never expires
	Updated   time.Time     `json:"updated"`   // when that Reply arrived
}

// farFuture stands for "never" in deadline arithmetic.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func addLifetime(t time.Time, d time.Duration) time.Time {
	if d == Infinity || t.IsZero() {
		return farFuture
	}
	return t.Add(d)
}

// PreferredUntil is when the prefix becomes deprecated: hand out no new
// addresses from it after that.
func (p Prefix) PreferredUntil() time.Time { return addLifetime(p.Updated, p.Preferred) }

// ValidUntil is when the prefix is gone: remove every use of it then.
func (p Prefix) ValidUntil() time.Time { return addLifetime(p.Updated, p.Valid) }

// Binding is what the client holds for its IA_PD: the delegated prefixes and
// the timers of the last Reply. It marshals to JSON as is (the Persister's
// record).
type Binding struct {
	Interface  string     `json:"interface"`
	ClientDUID DUID       `json:"clientDUID"`
	IAID       uint32     `json:"iaid"`
	ServerDUID DUID       `json:"serverDUID,omitempty"`
	Server     netip.Addr `json:"server,omitzero"` // address the last Reply came from
	// T1 and T2 are the effective timers of the last Reply, relative to
	// ReplyTime (T1 = T2 = 0 from the server already replaced by 0.5 and 0.8
	// of the shortest preferred lifetime). Infinity: never.
	T1        time.Duration `json:"t1"`
	T2        time.Duration `json:"t2"`
	ReplyTime time.Time     `json:"replyTime,omitzero"`
	Prefixes  []Prefix      `json:"prefixes"`
	// DNS are the recursive name servers of the last Reply, if any.
	DNS []netip.Addr `json:"dns,omitempty"`
}

// RenewAt is when the client sends Renew (ReplyTime + T1).
func (b Binding) RenewAt() time.Time { return addLifetime(b.ReplyTime, b.T1) }

// RebindAt is when the client sends Rebind (ReplyTime + T2).
func (b Binding) RebindAt() time.Time { return addLifetime(b.ReplyTime, b.T2) }

// Usable returns the prefixes not yet deprecated at now: new addresses may
// come from them.
func (b Binding) Usable(now time.Time) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range b.Prefixes {
		if now.Before(p.PreferredUntil()) {
			out = append(out, p.Prefix)
		}
	}
	return out
}

// Valid returns the prefixes whose valid lifetime has not run out at now.
func (b Binding) Valid(now time.Time) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range b.Prefixes {
		if now.Before(p.ValidUntil()) {
			out = append(out, p.Prefix)
		}
	}
	return out
}

// Expiry is when the last prefix runs out (zero for no prefix).
func (b Binding) Expiry() time.Time {
	var t time.Time
	for _, p := range b.Prefixes {
		if v := p.ValidUntil(); v.After(t) {
			t = v
		}
	}
	return t
}

// Clone returns a deep copy of b.
func (b Binding) Clone() Binding {
	b.ClientDUID = slices.Clone(b.ClientDUID)
	b.ServerDUID = slices.Clone(b.ServerDUID)
	b.Prefixes = slices.Clone(b.Prefixes)
	b.DNS = slices.Clone(b.DNS)
	return b
}

// Persister stores the binding so that a restarted client (or a standby in
// another process) renews the same prefixes instead of soliciting new ones.
// Save is called after every change of the binding, before the packets the
// same event produced are sent, with no prefixes after a Release or expiry
// (DUID and IAID are kept). Load returns a zero Binding and no error when
// nothing is stored. Errors from Save are logged and counted; the client
// keeps running on what it holds, except after an error wrapping
// ErrNotOwner: Run then returns it without sending anything more.
type Persister interface {
	Load(ctx context.Context) (Binding, error)
	Save(ctx context.Context, b Binding) error
}

// MemoryPersister keeps the binding in memory: for tests, and for callers
// that persist elsewhere through OnChange.
type MemoryPersister struct {
	mu    sync.Mutex
	b     Binding
	saves int
}

// Load implements Persister.
func (m *MemoryPersister) Load(context.Context) (Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.Clone(), nil
}

// Save implements Persister.
func (m *MemoryPersister) Save(_ context.Context, b Binding) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.b = b.Clone()
	m.saves++
	return nil
}

// Saves returns how many times Save was called.
func (m *MemoryPersister) Saves() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves
}

// FilePersister keeps the binding as JSON in one file, replaced atomically
// (write to a temporary file, fsync, rename).
type FilePersister struct {
	Path string
}

// Load implements Persister.
func (f FilePersister) Load(context.Context) (Binding, error) {
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Binding{}, nil
	}
	if err != nil {
		return Binding{}, fmt.Errorf("load PD binding: %w", err)
	}
	var b Binding
	if err := json.Unmarshal(data, &b); err != nil {
		return Binding{}, fmt.Errorf("load PD binding %s: %w", f.Path, err)
	}
	return b, nil
}

// Save implements Persister.
func (f FilePersister) Save(_ context.Context, b Binding) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), filepath.Base(f.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save PD binding: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save PD binding: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save PD binding: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save PD binding: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("save PD binding: %w", err)
	}
	return nil
}
