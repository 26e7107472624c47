// Package failpoint names the instants where a crash or a stall is most dangerous (between the data
// records and the commit record, between Kafka's commit and the source's confirmation, in the middle
// of a snapshot, ...) so that tests can aim at them. In a release build every call is a no-op that
// the compiler removes; built with the tag "failpoints", the environment variable FAILPOINTS arms
// them:
//
//	FAILPOINTS='writer.before-commit-record=kill@3;postgres.describe=block'
//
// An action is kill (SIGKILL to the process itself: no deferred call, no flush, as kill -9),
// sleep:<duration>, block (wait until the caller's context ends), or on (nothing: Hit reports true
// and the caller does what the failpoint's comment says). "@N" fires on the N-th hit only
// (default: every hit). Before acting, a line "failpoint <name> fired" goes to standard error.
package failpoint
