package daemon

import (
	"fmt"
	"sync/atomic"
)

// opGate admits one identity-changing operation at a time on this node (create, join,
// re-admission, certificate renewal, restore): a second one is refused at once with
// ErrBusy, naming the one under way, instead of waiting behind it while it makes network
// calls (a join may take 30 s). Nothing ever waits on the gate. The standing check does
// not take it: it stays out of the way while the gate is taken, and discards its verdict
// if an operation entered while it asked the peers (since).
type opGate struct {
	cur atomic.Pointer[string]
	gen atomic.Uint64 // operations entered so far
}

// enter takes the gate for op, or refuses; leave gives it back.
func (g *opGate) enter(op string) (leave func(), err error) {
	g.gen.Add(1) // before the gate is taken: a standing check that finds it free sees it
	if !g.cur.CompareAndSwap(nil, &op) {
		running := "another operation"
		if p := g.cur.Load(); p != nil {
			running = *p
		}
		return nil, fmt.Errorf("%w: %s is under way on this node; try %s again once it has finished", ErrBusy, running, op)
	}
	return func() { g.cur.Store(nil) }, nil
}

// free returns a mark for since when the gate is free, false when it is taken.
func (g *opGate) free() (uint64, bool) {
	mark := g.gen.Load()
	return mark, g.cur.Load() == nil
}

// since reports whether an operation tried to enter after free returned mark.
func (g *opGate) since(mark uint64) bool { return g.gen.Load() != mark }
