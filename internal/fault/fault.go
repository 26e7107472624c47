// Package fault marks errors that a restart cannot cure (bad configuration, a missing privilege, a
// fenced producer, a record too large for the broker), so the daemon stops on them with their message
// instead of retrying; every other error is retried from the last durable position.
package fault

import (
	"errors"
	"fmt"
)

// ErrTerminal is matched by errors.Is on every terminal error.
var ErrTerminal = errors.New("terminal")

type terminalError struct{ err error }

func (e terminalError) Error() string   { return e.err.Error() }
func (e terminalError) Unwrap() []error { return []error{e.err, ErrTerminal} }

// Terminal formats a terminal error; %w wraps as in fmt.Errorf.
func Terminal(format string, a ...any) error { return terminalError{fmt.Errorf(format, a...)} }

// Mark makes err terminal (nil stays nil).
func Mark(err error) error {
	if err == nil {
		return nil
	}
	return terminalError{err}
}

// IsTerminal reports whether err is terminal.
func IsTerminal(err error) bool { return errors.Is(err, ErrTerminal) }
