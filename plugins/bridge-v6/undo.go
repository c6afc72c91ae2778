package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// undo is the rollback of a failed ADD: each step that creates something
// pushes how to remove it before it runs (a step that fails half-way is
// undone too), and run removes in reverse order.
type undo []func() error

func (u *undo) push(f func() error) { *u = append(*u, f) }

// run calls every undo step, last pushed first, even when one fails, and
// joins their errors (nil when all succeeded).
func (u undo) run() error {
	errs := make([]error, 0, len(u))
	for i := len(u) - 1; i >= 0; i-- {
		errs = append(errs, u[i]())
	}
	return joinErrors(errs...)
}

// joinErrors joins the non-nil errs, their messages separated by "; " (a
// CNI error message is one line: errors.Join's newlines would split it);
// nil when there is none.
func joinErrors(errs ...error) error {
	var kept []error
	for _, err := range errs {
		if err != nil {
			kept = append(kept, err)
		}
	}
	switch len(kept) {
	case 0:
		return nil
	case 1:
		return kept[0]
	}
	return &joinedError{kept}
}

type joinedError struct{ errs []error }

func (e *joinedError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e *joinedError) Unwrap() []error { return e.errs }

// withAlso is err, whose CNI code the runtime must get (0 for a plain
// error: skel then answers 999), with what (a later failure, labelled)
// added to its message. skel prints the message of the first *types.Error
// in err's chain, so a coded err becomes a new *types.Error carrying both
// messages; a plain one is wrapped so that only err is unwrapped: a CNI
// error inside also (IPAM DEL's code 11) must not become the answer's code.
func withAlso(err error, label string, also error) error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return &types.Error{Code: ce.Code, Msg: fmt.Sprintf("%s; %s: %v", ce.Msg, label, also), Details: ce.Details}
	}
	return &alsoError{err: err, label: label, also: also}
}

type alsoError struct {
	err   error
	label string
	also  error
}

func (e *alsoError) Error() string { return fmt.Sprintf("%v; %s: %v", e.err, e.label, e.also) }
func (e *alsoError) Unwrap() error { return e.err }
