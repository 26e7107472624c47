package kcop_test

import (
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/kcop"
)

// The stage is what a source (or a capture.Pipeline) feeds.
var (
	_ capture.Handler    = (*kcop.Stage)(nil)
	_ capture.Progresser = (*kcop.Stage)(nil)
)
