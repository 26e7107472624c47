// Command cdcd is the change-data-capture daemon and its tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCommand().ExecuteContext(ctx)
	if err == nil {
		return
	}
	var exit exitError
	if !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, "cdcd:", err)
		os.Exit(2)
	}
	os.Exit(exit.code)
}

// exitError ends the process with a code after the command has printed what it had to say.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }
