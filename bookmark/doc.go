// Package bookmark holds cdcd's positions: source positions such as PostgreSQL LSNs, the commit
// stream record (cdcd's own bookmark, and the map a consumer follows to rebuild source order), and
// the record headers that tie data records to it. It imports nothing else of cdcd, so consumers
// can depend on it alone.
package bookmark
