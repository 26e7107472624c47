package kcop

import "github.com/cdcd-dev/cdcd/change"

// tableCache keeps what a KCOP derived from a table's shape.
type tableCache[T any] = change.ShapeCache[*change.Table, T]
