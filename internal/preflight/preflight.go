// Package preflight is the vocabulary of `cdcd validate`: each check of a source database or of Kafka
// reports findings that name what is wrong and how to fix it, in words a database administrator can
// act on without reading cdcd's code.
package preflight

import (
	"fmt"
	"io"
)

// Severity says whether a finding stops cdcd from working.
type Severity int

const (
	// OK records a prerequisite that was checked and holds.
	OK Severity = iota
	// Warning is something cdcd works around but the user should know, e.g. a table without a key.
	Warning
	// Problem is a prerequisite that is missing: cdcd cannot run until it is fixed.
	Problem
)

func (s Severity) String() string {
	switch s {
	case OK:
		return "ok"
	case Warning:
		return "warning"
	case Problem:
		return "problem"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Finding is the outcome of one check.
type Finding struct {
	Severity Severity
	// Component is what was checked: "postgres", "mariadb", "kafka".
	Component string
	// What names the prerequisite, e.g. "wal_level".
	What string
	// Detail says what was found.
	Detail string
	// Fix says what to do; empty for OK findings.
	Fix string
}

// Report collects findings in the order they were made.
type Report struct {
	Findings []Finding
}

// OK records a prerequisite that holds.
func (r *Report) OK(component, what, detail string) {
	r.Findings = append(r.Findings, Finding{Severity: OK, Component: component, What: what, Detail: detail})
}

// Warn records something the user should know that does not stop cdcd.
func (r *Report) Warn(component, what, detail, fix string) {
	r.Findings = append(r.Findings, Finding{Severity: Warning, Component: component, What: what, Detail: detail, Fix: fix})
}

// Problem records a missing prerequisite.
func (r *Report) Problem(component, what, detail, fix string) {
	r.Findings = append(r.Findings, Finding{Severity: Problem, Component: component, What: what, Detail: detail, Fix: fix})
}

// Problems counts the findings that stop cdcd.
func (r *Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Problem {
			n++
		}
	}
	return n
}

// Has reports whether a finding of severity sev exists for component and what.
func (r *Report) Has(sev Severity, component, what string) bool {
	for _, f := range r.Findings {
		if f.Severity == sev && f.Component == component && f.What == what {
			return true
		}
	}
	return false
}

// WriteTo prints the findings one per line, with the fix indented under each that has one.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, f := range r.Findings {
		k, err := fmt.Fprintf(w, "%-7s %s: %s: %s\n", f.Severity, f.Component, f.What, f.Detail)
		n += int64(k)
		if err != nil {
			return n, err
		}
		if f.Fix != "" {
			k, err = fmt.Fprintf(w, "        fix: %s\n", f.Fix)
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
