package allocator

import "fmt"

// Kind says why the allocator refused a request, in its own terms: the
// server maps each kind to a CNI code in one table (ipamserver.cniError),
// so the allocator never decides a wire code. A failure that is not an
// *Error comes from the store (etcd) or from the request's context.
//
// A Kind is itself an error, so errors.Is(err, allocator.KindExhausted)
// asks whether err is an allocator failure of that kind.
type Kind int

const (
	// KindInvalid: the network's configuration or the request cannot be
	// served as given (a requested address outside the pool, a pool that
	// differs from the registered one, no MAC for eui64); retrying the
	// same request cannot help.
	KindInvalid Kind = iota + 1
	// KindForeign: the attachment belongs to another node (two nodes use
	// the same container ID on one network). Error.Owner names that node.
	KindForeign
	// KindExhausted: no address is free in the network's pool.
	KindExhausted
	// KindTaken: the address the request needs (requested, or the EUI-64
	// of its MAC) is held by another attachment or is in another node's
	// block; it may be released later.
	KindTaken
	// KindNoPrefix: a pd-ipam network has no usable delegated prefix now
	// (no PD client, none held yet, or past its preferred lifetime).
	KindNoPrefix
	// KindNotFound: the attachment holds no addresses (never allocated,
	// released, or lost with its delegated prefix).
	KindNotFound
	// KindUnavailable: STATUS says an ADD on the network could not be
	// served now (etcd unreachable, pool full, no prefix, a bad pool).
	KindUnavailable
	// KindDegraded: STATUS says the network serves but some containers lost
	// their addresses (an expired delegated prefix).
	KindDegraded
	// KindFenced: the write was refused because the node's registration
	// was removed (store.ErrFenced); the node registers again and claims
	// new blocks, so a retry succeeds.
	KindFenced
)

var kindNames = map[Kind]string{
	KindInvalid:     "invalid",
	KindForeign:     "foreign",
	KindExhausted:   "exhausted",
	KindTaken:       "taken",
	KindNoPrefix:    "no prefix",
	KindNotFound:    "not found",
	KindUnavailable: "unavailable",
	KindDegraded:    "degraded",
	KindFenced:      "fenced",
}

// String is the kind's name, for logs and test failures.
func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error makes a Kind usable as an errors.Is target.
func (k Kind) Error() string { return "allocator: " + k.String() }

// Error is a failure the allocator decided, with the message a user sees.
type Error struct {
	Kind Kind
	// Msg says what failed, naming the object and the value.
	Msg string
	// Details, when set, says what to do about it.
	Details string
	// Owner is the node an attachment of KindForeign belongs to.
	Owner string
	// Err is the failure this one re-states, if any (STATUS re-states the
	// reason an ADD would fail as KindUnavailable).
	Err error
}

// Error is Msg, then Details after "; " when set: the same text a CNI
// error of the same message and details prints.
func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + "; " + e.Details
	}
	return e.Msg
}

// Unwrap is the re-stated failure, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's Kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// newError is an *Error of kind with a formatted message.
func newError(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// withDetails sets the hint of e and returns it.
func (e *Error) withDetails(details string) *Error {
	e.Details = details
	return e
}
