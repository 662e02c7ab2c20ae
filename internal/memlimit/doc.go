// Package memlimit keeps the Go runtime's soft memory limit (runtime/debug.SetMemoryLimit)
// a set share above the memory the daemon needs, so that its resident set stays close to
// its data: the node's state is held in memory, and with Go's default (GOGC=100) the heap
// may grow to twice the live heap before a collection, and pages freed after a large
// transient use (a restore, a backup, a long list) go back to the system only slowly.
//
// After every garbage collection the limit is set to the memory outside the heap (stacks,
// runtime metadata) plus the live heap that collection found, grown by the headroom
// (Policy.Headroom, 25% by default), and never below Policy.Floor (24 MiB by default), so
// that a small node keeps Go's default pacing. Because the limit follows the live heap
// up, it can never make the collector run without end on a big configuration (it is
// always a headroom above what is live), and because it follows it down, the runtime
// returns the pages of a transient peak to the system once the next collection has run.
// The garbage collector's CPU stays low with a small headroom: the values of the
// configuration, the bulk of the heap, hold no pointers and cost the collector nothing to
// scan.
//
// GOGC still applies (the runtime collects at whichever of the two goals comes first);
// with GOMEMLIMIT set in the environment the operator's limit is kept and no policy runs.
//
// Package memlimit imports the standard library and hclog only; it must never import
// another package of this project.
package memlimit
