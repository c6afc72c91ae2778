// Package ipamserver serves ipamd's protocol (package ipamapi) on a unix
// socket: it decodes and validates each request, hands it to the allocator
// and turns every outcome into a CNI result or a CNI error with the right
// code.
package ipamserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniutils "github.com/containernetworking/cni/pkg/utils"

	"github.com/v6cni/v6cni/pkg/daemon/allocator"
	"github.com/v6cni/v6cni/pkg/daemon/ipammetrics"
	"github.com/v6cni/v6cni/pkg/daemon/nodecheck"
	"github.com/v6cni/v6cni/pkg/daemon/store"
	"github.com/v6cni/v6cni/pkg/ipamapi"
	"github.com/v6cni/v6cni/pkg/ipamconf"
)

// maxRequest bounds a request body: a network config is a few KiB.
const maxRequest = 1 << 20

// maxContainerID bounds CNI_CONTAINERID, which the spec leaves unbounded:
// runtimes use 64 hex digits, and it becomes part of etcd keys.
const maxContainerID = 1024

// EtcdTimeout bounds the etcd work of one request: a runtime must hear
// "try again later" (code 11) within seconds when etcd is gone, not hang.
const EtcdTimeout = 4 * time.Second

// Server answers IPAM requests for one node.
type Server struct {
	// Version is reported by the health verb.
	Version string
	// NetnsExists tells whether a recorded network namespace path still
	// exists; the admin GC releases attachments whose netns is gone.
	NetnsExists func(path string) bool
	// Metrics, when set, records every request.
	Metrics *ipammetrics.Metrics
	// Routing, when set, is asked by STATUS after the allocator: it returns
	// a CNI error (51) when the node's prefixes cannot reach the network.
	Routing func(ctx context.Context) error
	// Services, when set, serves router advertisements and DHCPv6 on the
	// bridges of self-configuring attachments (bridge-v6 ipv6Mode).
	Services Services
	// BGP, when set, reports the BGP speaker's state for the CLI.
	BGP func(ctx context.Context) (ipamapi.BGPState, error)
	// PD and PDRelease, when set, report and release the node's DHCPv6-PD
	// binding.
	PD, PDRelease func(ctx context.Context) (ipamapi.PDState, error)

	alloc *allocator.Allocator
	store *store.Store
	log   *slog.Logger
	http  *http.Server
}

// New returns a server for alloc.
func New(alloc *allocator.Allocator, st *store.Store, log *slog.Logger) *Server {
	s := &Server{alloc: alloc, store: st, log: log, NetnsExists: allocator.NetnsExists}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+ipamapi.PathAdd, s.handle(s.add))
	mux.HandleFunc("POST "+ipamapi.PathDel, s.handle(s.del))
	mux.HandleFunc("POST "+ipamapi.PathCheck, s.handle(s.check))
	mux.HandleFunc("POST "+ipamapi.PathStatus, s.handle(s.status))
	mux.HandleFunc("POST "+ipamapi.PathGC, s.handle(s.gc))
	mux.HandleFunc("POST "+ipamapi.PathState, s.handle(s.state))
	mux.HandleFunc("POST "+ipamapi.PathHealth, s.handleAdmin(s.health))
	mux.HandleFunc("POST "+ipamapi.PathLeases, s.handleAdmin(s.leases))
	mux.HandleFunc("POST "+ipamapi.PathReclaim, s.handleAdmin(s.reclaim))
	mux.HandleFunc("POST "+ipamapi.PathRelease, s.handleAdmin(s.release))
	mux.HandleFunc("POST "+ipamapi.PathConsist, s.handleAdmin(s.consistency))
	mux.HandleFunc("POST "+ipamapi.PathBGP, s.handleAdmin(s.bgp))
	mux.HandleFunc("POST "+ipamapi.PathPD, s.handleAdmin(s.pd))
	mux.HandleFunc("POST "+ipamapi.PathPDRelease, s.handleAdmin(s.pdRelease))
	mux.HandleFunc("POST "+ipamapi.PathNodes, s.handleAdmin(s.nodes))
	mux.HandleFunc("POST "+ipamapi.PathNodeRemove, s.handleAdmin(s.removeNode))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s
}

// Handler is the server's HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Listen creates the unix socket at path, readable and writable by root
// only, creating its directory. It refuses to replace the socket of a
// running ipamd.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory %s: %w", filepath.Dir(path), err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another ipamd is serving it", path)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	// The umask makes the socket 0600 from its creation: a chmod after
	// listen would leave a window where anyone could connect.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

// Serve serves on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests and waits for those in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Services follows the attachments that configure themselves: ipamd
// serves their bridge while it has at least one.
type Services interface {
	Attached(ctx context.Context, req allocator.Request, config []byte, res *current.Result) error
	Detached(ctx context.Context, h *store.Handle) error
	// Status is nil when the network's bridges are served, else a CNI
	// error (51) saying what is not: STATUS returns it.
	Status(network string) error
}

// call is one decoded request.
type call struct {
	req  ipamapi.Request
	conf *ipamconf.NetConf
	id   store.AttachmentID
}

type handlerFunc func(ctx context.Context, c *call) (any, error)

func (s *Server) handle(fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c, err := decode(r)
		var out any
		if err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), EtcdTimeout)
			out, err = fn(ctx, c)
			cancel()
		}
		verb := strings.TrimPrefix(r.URL.Path, "/v1/")
		if err != nil {
			cerr, etcd := cniError(err)
			if s.Metrics != nil {
				s.Metrics.Observe(verb, time.Since(start), cerr)
				if etcd {
					s.Metrics.EtcdError()
				}
			}
			s.log.Warn("request failed", "path", r.URL.Path, "network", c.req.Network,
				"container", ipamapi.ShortID(c.req.ContainerID), "ifname", c.req.IfName,
				"code", cerr.Code, "error", cerr.Msg, "duration", time.Since(start))
			writeJSON(w, httpStatus(cerr.Code), cerr)
			return
		}
		if s.Metrics != nil {
			s.Metrics.Observe(verb, time.Since(start), nil)
		}
		if out == nil {
			out = struct{}{}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func decode(r *http.Request) (*call, error) {
	c := &call{}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err != nil {
		return c, types.NewError(types.ErrIOFailure, fmt.Sprintf("read request: %v", err), "")
	}
	if len(body) > maxRequest {
		return c, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("request larger than %d bytes", maxRequest), "")
	}
	if err := json.Unmarshal(body, &c.req); err != nil {
		return c, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode request: %v", err), "")
	}
	if err := ipamconf.CheckDuplicateKeys("request", body); err != nil {
		return c, err
	}
	if r.URL.Path == ipamapi.PathState {
		return c, nil
	}
	conf, err := ipamconf.Parse(c.req.Config)
	if err != nil {
		return c, err
	}
	if c.req.Network != conf.Name {
		return c, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("request network %q differs from the config's name %q", c.req.Network, conf.Name), "")
	}
	c.conf = conf
	switch r.URL.Path {
	case ipamapi.PathStatus, ipamapi.PathGC:
		return c, nil
	}
	// Container ID and ifname become parts of etcd keys: hold them to the
	// CNI spec's rules, as a plugin's skel does.
	if n := len(c.req.ContainerID); n > maxContainerID {
		return c, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_CONTAINERID: containerID %q… is %d bytes, longer than %d", c.req.ContainerID[:16], n, maxContainerID), "")
	}
	if err := cniutils.ValidateContainerID(c.req.ContainerID); err != nil {
		return c, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID: "+err.Msg, err.Details)
	}
	if err := cniutils.ValidateInterfaceName(c.req.IfName); err != nil {
		return c, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME: "+err.Msg, err.Details)
	}
	// ValidateInterfaceName lets NUL and other control characters through;
	// the kernel would refuse such a name, and it must not reach a key.
	if strings.ContainsFunc(c.req.IfName, unicode.IsControl) {
		return c, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME: interface name %q contains a control character", c.req.IfName), "")
	}
	if strings.ContainsRune(c.req.Netns, 0) {
		return c, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS: %q contains a NUL byte", c.req.Netns), "")
	}
	c.id = store.AttachmentID{Network: conf.Name, ContainerID: c.req.ContainerID, IfName: c.req.IfName}
	return c, nil
}

// addRequest is the input parsing of ADD beyond decode: requested
// addresses (runtimeConfig, args, CNI_ARGS) and the attachment the plugin
// describes (bridge, ipv6Mode, MAC). It touches no state.
func addRequest(c *call) (allocator.Request, error) {
	args, err := ipamconf.ParseArgs(c.req.Config, c.req.Args)
	if err != nil {
		return allocator.Request{}, err
	}
	req := allocator.Request{ID: c.id, Netns: c.req.Netns, Conf: c.conf, Args: args}
	if err := attachment(c, &req); err != nil {
		return allocator.Request{}, err
	}
	return req, nil
}

// attachment validates the request's attachment (code 7 naming the field)
// and applies it: the MAC for eui64 addressing and DHCPv6, and for the
// modes where the container configures itself the bridge ipamd serves and
// the mode. In slaac and dhcpv6-stateless the container's kernel forms its
// address from the MAC, so IPAM picks that same EUI-64 address (and can
// keep it unique), which needs /64 blocks.
func attachment(c *call, req *allocator.Request) error {
	at := c.req.Attachment
	if at == nil {
		return nil
	}
	invalid := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, args...), "")
	}
	if at.IPv6Mode != "" && !at.IPv6Mode.Valid() {
		return invalid("request attachment.ipv6Mode: %s", ipamapi.IPv6ModeError(at.IPv6Mode))
	}
	if at.Bridge != "" {
		if err := cniutils.ValidateInterfaceName(at.Bridge); err != nil || strings.ContainsFunc(at.Bridge, unicode.IsControl) {
			return invalid("request attachment.bridge: %q is not a valid interface name", at.Bridge)
		}
	}
	if at.MAC != "" {
		mac, err := net.ParseMAC(at.MAC)
		if err != nil || len(mac) != 6 || mac[0]&0x01 != 0 || slices.Equal(mac, make(net.HardwareAddr, 6)) {
			return invalid("request attachment.mac: %q is not a unicast 6-byte Ethernet address", at.MAC)
		}
		req.MAC = mac
	}
	if !at.IPv6Mode.SelfConfiguring() {
		return nil
	}
	if at.Bridge == "" {
		return invalid("request attachment.bridge: required with ipv6Mode %q", at.IPv6Mode)
	}
	if req.MAC == nil {
		return invalid("request attachment.mac: required with ipv6Mode %q", at.IPv6Mode)
	}
	if at.IPv6Mode.Autoconf() {
		for i, set := range c.conf.IPAM.Ranges {
			for j, r := range set {
				if r.Subnet.Addr().Is6() && r.BlockSize != 64 {
					return invalid("ipam.ranges[%d][%d].blockSize: %d: ipv6Mode %q needs /64 blocks (SLAAC forms addresses in a /64)", i, j, r.BlockSize, at.IPv6Mode)
				}
			}
		}
		c.conf.IPAM.Addressing = ipamconf.EUI64
	}
	req.Bridge, req.Mode = at.Bridge, string(at.IPv6Mode)
	return nil
}

func (s *Server) add(ctx context.Context, c *call) (any, error) {
	start := time.Now()
	req, err := addRequest(c)
	if err != nil {
		return nil, err
	}
	asg, err := s.alloc.Add(ctx, req)
	if err != nil {
		return nil, err
	}
	res := cniResult(asg, c.conf)
	if req.Mode != "" && s.Services != nil {
		if err := s.Services.Attached(ctx, req, c.req.Config, res); err != nil {
			s.log.Warn("serve RAs/DHCPv6 for the attachment", "bridge", req.Bridge, "mode", req.Mode, "error", err)
		}
	}
	addrs := make([]string, 0, len(asg.IPs))
	for _, ip := range asg.IPs {
		addrs = append(addrs, ip.Address.String())
	}
	s.log.Info("ADD", "network", c.id.Network, "container", ipamapi.ShortID(c.id.ContainerID), "ifname", c.id.IfName,
		"addrs", strings.Join(addrs, ","), "duration", time.Since(start))
	return res, nil
}

func (s *Server) del(ctx context.Context, c *call) (any, error) {
	start := time.Now()
	var keep time.Duration
	if c.conf.IPAM.Sticky {
		keep = c.conf.IPAM.StickyGrace.Duration
	}
	var h *store.Handle
	var err error
	if len(c.req.Duplicates) > 0 {
		// The rollback of an ADD that found addresses in use by another
		// host: those stay out of use a while (allocator.Quarantine).
		var recs []store.Quarantined
		h, recs, err = s.alloc.Quarantine(ctx, c.id, c.req.Duplicates, c.conf.IPAM.DuplicateQuarantine.Duration)
		if s.Metrics != nil {
			s.Metrics.Quarantined(len(recs))
		}
	} else {
		h, err = s.alloc.Del(ctx, c.id, keep)
	}
	if err != nil {
		return nil, err
	}
	if h != nil && h.Mode != "" && s.Services != nil {
		if err := s.Services.Detached(ctx, h); err != nil {
			s.log.Warn("stop serving the attachment", "bridge", h.Bridge, "error", err)
		}
	}
	var addrs []string
	if h != nil {
		for _, ip := range h.IPs {
			addrs = append(addrs, ip.Address.String())
		}
	}
	s.log.Info("DEL", "network", c.id.Network, "container", ipamapi.ShortID(c.id.ContainerID), "ifname", c.id.IfName,
		"addrs", strings.Join(addrs, ","), "duration", time.Since(start))
	return nil, nil
}

// check answers, once the allocator found the attachment's record sound,
// with the addresses the record holds (ipamapi.CheckResult): a renumbered
// attachment is checked against them, not against prevResult's.
func (s *Server) check(ctx context.Context, c *call) (any, error) {
	if err := s.alloc.Check(ctx, c.id); err != nil {
		return nil, err
	}
	// A second read: allocator.Check returns no handle. A DEL in between
	// leaves an empty answer, and the plugin checks prevResult's.
	h, err := s.store.Handle(ctx, c.id)
	if err != nil {
		return nil, err
	}
	return checkResult(h, time.Now()), nil
}

func (s *Server) status(ctx context.Context, c *call) (any, error) {
	if err := s.alloc.Status(ctx, c.conf); err != nil {
		return nil, err
	}
	if s.Services != nil {
		if err := s.Services.Status(c.id.Network); err != nil {
			return nil, err
		}
	}
	if s.Routing != nil {
		return nil, s.Routing(ctx)
	}
	return nil, nil
}

// gcArgs is where CNI 1.1 puts the attachments a GC must keep. libcni
// v1.2.3+ sends both keys; the spec first named the second.
type gcArgs struct {
	Valid  *[]gcAttachment `json:"cni.dev/valid-attachments"`
	Legacy *[]gcAttachment `json:"cni.dev/attachments"`
}

type gcAttachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

func (s *Server) gc(ctx context.Context, c *call) (any, error) {
	var args gcArgs
	if err := json.Unmarshal(c.req.Config, &args); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode GC attachments: %v", err), "")
	}
	list := args.Valid
	if list == nil {
		list = args.Legacy
	}
	if list == nil {
		// No list at all (cnitool gc): nothing can be proven stale.
		return nil, nil
	}
	valid := make([]store.AttachmentID, 0, len(*list))
	for _, a := range *list {
		valid = append(valid, store.AttachmentID{Network: c.conf.Name, ContainerID: a.ContainerID, IfName: a.IfName})
	}
	released, err := s.alloc.GC(ctx, c.conf.Name, valid)
	if s.Metrics != nil {
		s.Metrics.Reclaimed(len(released))
	}
	for _, h := range released {
		s.log.Info("GC released", "network", h.Network, "container", ipamapi.ShortID(h.ContainerID), "ifname", h.IfName)
	}
	return nil, err
}

func (s *Server) state(ctx context.Context, _ *call) (any, error) {
	pools, err := s.alloc.Pools(ctx)
	if err != nil {
		return nil, err
	}
	st := ipamapi.State{Node: s.alloc.Node()}
	for _, p := range pools {
		ns := ipamapi.NetworkState{Network: p.Network, Pool: p.Definition, Blocks: make([]ipamapi.BlockState, 0, len(p.Blocks))}
		for _, b := range p.Blocks {
			bs := ipamapi.BlockState{Block: b.CIDR.String(), Node: b.Node, Gateway: b.Gateway.String(), Addrs: make([]ipamapi.AddrState, 0, len(b.Addrs))}
			for _, a := range b.Addrs {
				bs.Addrs = append(bs.Addrs, ipamapi.AddrState{Addr: a.Addr.String(), ContainerID: a.ID.ContainerID, IfName: a.ID.IfName})
			}
			ns.Blocks = append(ns.Blocks, bs)
		}
		st.Networks = append(st.Networks, ns)
	}
	return st, nil
}

func (s *Server) handleAdmin(fn func(ctx context.Context, req *ipamapi.AdminRequest) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ipamapi.AdminRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode request: %v", err), ""))
			return
		}
		// Admin verbs may walk every lease: a longer bound than CNI calls.
		ctx, cancel := context.WithTimeout(r.Context(), 10*EtcdTimeout)
		defer cancel()
		out, err := fn(ctx, &req)
		if err != nil {
			cerr, _ := cniError(err)
			writeJSON(w, httpStatus(cerr.Code), cerr)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) health(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	h := ipamapi.Health{Node: s.alloc.Node(), Version: s.Version, Etcd: "ok", Nodes: []string{}}
	if err := s.store.Ping(ctx); err != nil {
		h.Etcd = err.Error()
		return h, nil
	}
	if nodes, err := s.store.AliveNodes(ctx); err == nil {
		for _, n := range nodes {
			h.Nodes = append(h.Nodes, n.Node)
		}
		slices.Sort(h.Nodes)
	}
	return h, nil
}

func (s *Server) leases(ctx context.Context, req *ipamapi.AdminRequest) (any, error) {
	hs, err := s.alloc.Attachments(ctx, req.Network)
	if err != nil {
		return nil, err
	}
	out := make([]ipamapi.Lease, 0, len(hs))
	for _, h := range hs {
		out = append(out, lease(h))
	}
	return out, nil
}

func (s *Server) consistency(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	return nodecheck.Run(ctx, s.store, s.alloc.Node(), nodecheck.Kernel{Exists: s.NetnsExists})
}

func (s *Server) reclaim(ctx context.Context, req *ipamapi.AdminRequest) (any, error) {
	released, err := s.alloc.Reclaim(ctx, time.Duration(req.GraceSeconds)*time.Second, s.NetnsExists)
	if s.Metrics != nil {
		s.Metrics.Reclaimed(len(released))
	}
	out := ipamapi.Released{Released: []ipamapi.Lease{}}
	for _, h := range released {
		s.log.Info("GC released", "network", h.Network, "container", ipamapi.ShortID(h.ContainerID), "ifname", h.IfName, "netns", h.Netns)
		out.Released = append(out.Released, lease(h))
	}
	return out, err
}

func (s *Server) release(ctx context.Context, req *ipamapi.AdminRequest) (any, error) {
	id := store.AttachmentID{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}
	if id.Network == "" || id.ContainerID == "" || id.IfName == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "release: network, container ID and ifname are all required", "")
	}
	h, err := s.alloc.Del(ctx, id, 0)
	out := ipamapi.Released{Released: []ipamapi.Lease{}}
	if h != nil {
		s.log.Info("released by admin", "network", h.Network, "container", ipamapi.ShortID(h.ContainerID), "ifname", h.IfName)
		out.Released = append(out.Released, lease(*h))
	}
	return out, err
}

func (s *Server) bgp(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	if s.BGP == nil {
		return ipamapi.BGPState{Peers: []ipamapi.BGPPeer{}, Announced: []string{}}, nil
	}
	return s.BGP(ctx)
}

func (s *Server) pd(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	if s.PD == nil {
		return ipamapi.PDState{Prefixes: []ipamapi.PDPrefix{}}, nil
	}
	return s.PD(ctx)
}

func (s *Server) pdRelease(ctx context.Context, _ *ipamapi.AdminRequest) (any, error) {
	if s.PDRelease == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "this ipamd runs no DHCPv6-PD client (--pd-interface)", "")
	}
	return s.PDRelease(ctx)
}

func lease(h store.Handle) ipamapi.Lease {
	l := ipamapi.Lease{
		Network: h.Network, ContainerID: h.ContainerID, IfName: h.IfName,
		Node: h.Node, Netns: h.Netns, Created: h.Created.Format(time.RFC3339), Addrs: []string{},
	}
	for _, ip := range h.IPs {
		l.Addrs = append(l.Addrs, ip.Address.String())
	}
	return l
}

func httpStatus(code uint) int {
	switch code {
	case types.ErrTryAgainLater, types.ErrPluginNotAvailable, types.ErrLimitedConnectivity:
		return http.StatusServiceUnavailable
	case types.ErrUnknownContainer:
		return http.StatusNotFound
	case types.ErrInternal:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
