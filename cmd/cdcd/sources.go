package main

// The source kinds this binary can capture; each registers itself with package capture.
import (
	_ "github.com/cdcd-dev/cdcd/capture/mysql"
	_ "github.com/cdcd-dev/cdcd/capture/postgres"
)
