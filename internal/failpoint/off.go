//go:build !failpoints

package failpoint

import "context"

// Enabled reports whether this build has failpoints.
const Enabled = false

// Hit marks the failpoint name; in a release build it does nothing and reports false.
func Hit(context.Context, string) bool { return false }
