// Package renumber moves running containers from an old delegated prefix's
// address to its successor, make-before-break (design pd-ha-renumbering
// §3.3): a few worker goroutines enter each container's network namespace
// and, depending on how the container got its address, add the new address
// and deprecate the old one themselves (static) or leave that to router
// advertisements and DHCPv6 and only remove the old address at its valid
// end (slaac, dhcpv6-*). The allocator decides what moves (its records are
// the truth); this package only touches kernels, and is idempotent: a job
// submitted again, after a restart or a take-over, lands in the same state.
package renumber

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/link"
)

// Job is one attachment to renumber.
type Job struct {
	// Netns is the container's network namespace path (the handle's
	// CNI_NETNS), IfName and MAC its interface: a namespace whose IfName
	// is missing or has another MAC is left alone (netns_mismatch).
	Netns, IfName string
	MAC           net.HardwareAddr
	// Old and New are the addresses, with their block's prefix length.
	Old, New netip.Prefix
	// OldGateway and NewGateway are the blocks' gateways (static mode:
	// the routes via the old one move to the new one).
	OldGateway, NewGateway netip.Addr
	// OldValidUntil is the end of the old prefix's valid lifetime; zero or
	// past: the old address goes at once (an abrupt renumbering).
	OldValidUntil time.Time
	// Mode is the attachment's ipv6Mode: static ("" too), slaac,
	// dhcpv6-stateless or dhcpv6-stateful.
	Mode string
}

func (j Job) String() string {
	return fmt.Sprintf("%s %s %s→%s (%s)", j.Netns, j.IfName, j.Old, j.New, j.mode())
}

func (j Job) mode() ipamapi.IPv6Mode {
	if j.Mode == "" {
		return ipamapi.IPv6ModeStatic
	}
	return ipamapi.IPv6Mode(j.Mode)
}

// validate refuses a job no worker could carry out.
func (j Job) validate() error {
	switch {
	case j.Netns == "" || j.IfName == "":
		return errors.New("no netns or interface name")
	case !j.Old.IsValid() || !j.New.IsValid():
		return errors.New("old or new address missing")
	case !j.mode().Valid():
		return fmt.Errorf("mode %s", ipamapi.IPv6ModeError(j.mode()))
	}
	return nil
}

// Reason is why a job failed, the label of pd_renumber_errors_total.
type Reason string

// The reasons.
const (
	// NetnsGone: the namespace path no longer opens (the container is
	// gone, its bind mount removed).
	NetnsGone Reason = "netns_gone"
	// NetnsMismatch: the namespace has no IfName with the job's MAC (a
	// stale /proc/<pid>/ns/net path).
	NetnsMismatch Reason = "netns_mismatch"
	// Netlink: the kernel refused a change.
	Netlink Reason = "netlink"
	// Invalid: the job itself is malformed (a bug of the caller).
	Invalid Reason = "invalid"
)

// reasonOf classifies a job's error.
func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, link.ErrNotNetNS):
		return NetnsGone
	case errors.Is(err, link.ErrIfaceMismatch):
		return NetnsMismatch
	}
	return Netlink
}

// Batch is one busy period of the workers: from the first Submit while
// they were idle to the moment every job submitted since is done. One
// renumbering of a node's attachments is one batch (pd_renumber_seconds is
// End - Start, or End - the Reply's time when the caller knows it).
// Deferred removals of old addresses are not part of it.
type Batch struct {
	Start, End   time.Time
	Jobs, Failed int
}

// Stats are the workers' counters since New.
type Stats struct {
	// Done counts jobs carried out (deferred removals included).
	Done uint64
	// Errors counts failed jobs and removals by reason.
	Errors map[Reason]uint64
	// Pending is the jobs submitted and not yet done; Timers the old
	// addresses waiting for their valid end.
	Pending, Timers int
}

// Config configures the workers; the zero value is usable.
type Config struct {
	// Workers is the number of goroutines entering namespaces (default 4).
	Workers int
	// Queue bounds the jobs waiting for a worker (default 1024); Submit
	// blocks while it is full.
	Queue int
	// Log receives one line per failure (default slog.Default()).
	Log *slog.Logger
	// OnError, when set, is called for every failure (metrics).
	OnError func(Reason)
	// OnBatch, when set, is called at the end of every busy period.
	OnBatch func(Batch)
}

// Workers run renumbering jobs.
type Workers struct {
	cfg   Config
	log   *slog.Logger
	queue chan task
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu      sync.Mutex
	pending int
	// reporting counts batches whose OnBatch is running.
	reporting int
	batch     Batch
	done      uint64
	errs      map[Reason]uint64
	timers    map[timerKey]*time.Timer
	idle      *sync.Cond
}

// task is a queued unit of work: a job, or the removal of its old address
// at its valid end.
type task struct {
	job    Job
	remove bool
}

// timerKey names an old address waiting for its removal.
type timerKey struct {
	netns, ifName string
	old           netip.Addr
}

// New starts the workers; Close stops them.
func New(cfg Config) *Workers {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	w := &Workers{
		cfg:    cfg,
		log:    cfg.Log,
		queue:  make(chan task, cfg.Queue),
		errs:   map[Reason]uint64{},
		timers: map[timerKey]*time.Timer{},
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.idle = sync.NewCond(&w.mu)
	w.ctx, w.stop = context.WithCancel(context.Background())
	for range cfg.Workers {
		w.wg.Add(1)
		go w.run()
	}
	return w
}

// Submit queues jobs, blocking while the queue is full; after Close it
// drops them. A malformed job is counted (Invalid) and dropped. The jobs
// of one call are one batch (unless the workers were already busy): pass
// a renumbering's jobs together, so that its batch does not end between
// two of them.
func (w *Workers) Submit(jobs ...Job) {
	valid := jobs[:0:0]
	for _, j := range jobs {
		if err := j.validate(); err != nil {
			w.fail(j, Invalid, err)
			continue
		}
		valid = append(valid, j)
	}
	if len(valid) == 0 || w.ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	if w.pending == 0 {
		w.batch = Batch{Start: time.Now()}
	}
	w.pending += len(valid)
	w.batch.Jobs += len(valid)
	w.mu.Unlock()
	for _, j := range valid {
		select {
		case w.queue <- task{job: j}:
		case <-w.ctx.Done():
			w.finish(false, false)
		}
	}
	if w.ctx.Err() != nil {
		w.drain() // Close ran meanwhile: what was queued since stays undone
	}
}

// Wait blocks until every submitted job is done (not the deferred
// removals), or ctx ends.
func (w *Workers) Wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.idle.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.pending > 0 || w.reporting > 0 {
		if ctx.Err() != nil {
			return fmt.Errorf("%d renumbering job(s) not done: %w", w.pending, ctx.Err())
		}
		w.idle.Wait()
	}
	return nil
}

// Stats returns the counters.
func (w *Workers) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Stats{Done: w.done, Errors: make(map[Reason]uint64, len(w.errs)), Pending: w.pending, Timers: len(w.timers)}
	for r, n := range w.errs {
		s.Errors[r] = n
	}
	return s
}

// Close stops the workers and the removal timers. Old addresses of
// static attachments still go at their valid end (the kernel's lifetime);
// those of self-configuring ones are removed by the next ipamd, which
// re-derives its jobs from etcd.
func (w *Workers) Close() {
	w.stop()
	w.mu.Lock()
	for k, t := range w.timers {
		t.Stop()
		delete(w.timers, k)
	}
	w.mu.Unlock()
	w.wg.Wait()
	w.drain()
}

// drain drops the queued tasks once the workers stopped: jobs no worker
// took are not done, and Wait must not wait for them.
func (w *Workers) drain() {
	for {
		select {
		case t := <-w.queue:
			if !t.remove {
				w.finish(false, false)
			}
		default:
			return
		}
	}
}

func (w *Workers) run() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case t := <-w.queue:
			w.do(t)
		}
	}
}

// do carries out one task and accounts for it.
func (w *Workers) do(t task) {
	var err error
	switch {
	case t.remove:
		err = w.removeOld(t.job)
	case t.job.mode() == ipamapi.IPv6ModeStatic:
		err = w.renumberStatic(t.job)
	default:
		// RAs (slaac) and the DHCPv6 server (stateful) bring the new
		// address; the old one has a lifetime of at least 2 h in the
		// container's kernel whatever an RA says (RFC 4862 §5.5.3 e),
		// so it is removed here at its valid end.
		w.schedule(t.job)
	}
	if err != nil {
		w.fail(t.job, reasonOf(err), err)
	} else {
		w.mu.Lock()
		w.done++
		w.mu.Unlock()
	}
	if !t.remove {
		w.finish(true, err != nil)
	}
}

// finish accounts for the end of a submitted job (ran: it reached a
// worker) and reports the batch when it was the last.
func (w *Workers) finish(ran, failed bool) {
	w.mu.Lock()
	w.pending--
	if failed || !ran {
		w.batch.Failed++
	}
	if w.pending > 0 {
		w.mu.Unlock()
		return
	}
	b := w.batch
	b.End = time.Now()
	// Wait returns only once OnBatch did: a caller that waited reads
	// the batch's figure.
	w.reporting++
	w.mu.Unlock()
	if w.cfg.OnBatch != nil {
		w.cfg.OnBatch(b)
	}
	w.mu.Lock()
	w.reporting--
	w.idle.Broadcast()
	w.mu.Unlock()
}

func (w *Workers) fail(j Job, r Reason, err error) {
	w.mu.Lock()
	w.errs[r]++
	w.mu.Unlock()
	w.log.Warn("renumber a container", "job", j.String(), "reason", string(r), "error", err)
	if w.cfg.OnError != nil {
		w.cfg.OnError(r)
	}
}

// renumberStatic does the whole move in the namespace (link.RenumberContainer).
func (w *Workers) renumberStatic(j Job) error {
	return inNetns(j.Netns, func() error {
		return link.RenumberContainer(link.Renumbering{
			IfName: j.IfName, MAC: j.MAC, Old: j.Old, New: j.New,
			OldGateway: j.OldGateway, NewGateway: j.NewGateway, OldValidUntil: j.OldValidUntil,
		}, time.Now())
	})
}

// removeOld removes the old address of a self-configuring attachment, if
// still there, after checking the interface's MAC.
func (w *Workers) removeOld(j Job) error {
	return inNetns(j.Netns, func() error {
		l, err := link.ContainerIface(j.IfName, j.MAC)
		if err != nil {
			return err
		}
		return link.RemoveAddr(l, j.Old.Addr())
	})
}

// schedule queues the removal of j's old address at its valid end (now if
// past). A job submitted again replaces its timer.
func (w *Workers) schedule(j Job) {
	key := timerKey{j.Netns, j.IfName, j.Old.Addr()}
	fire := func() {
		w.mu.Lock()
		delete(w.timers, key)
		w.mu.Unlock()
		select {
		case w.queue <- task{job: j, remove: true}:
		case <-w.ctx.Done():
		}
	}
	left := time.Until(j.OldValidUntil)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		return
	}
	if t, ok := w.timers[key]; ok {
		t.Stop()
	}
	if j.OldValidUntil.IsZero() || left <= 0 {
		delete(w.timers, key)
		// Not on this worker: the queue may be full of jobs whose
		// workers wait for it.
		go fire()
		return
	}
	w.timers[key] = time.AfterFunc(left, fire)
}

// inNetns runs f in the namespace at path.
func inNetns(path string, f func() error) error {
	ns, err := link.OpenNetNS(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Do(f)
}
