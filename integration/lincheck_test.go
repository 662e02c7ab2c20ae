package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The sequential model of the configuration store that TestLinearizable checks its
// histories against, with porcupine.
//
// One key's state is linState. A version is the Raft index of the write that produced
// the entry, so the model cannot predict it: it learns versions from outputs and checks
// them for consistency instead.
//
//   - Versions of one key strictly increase along the linearization: each write is
//     applied at a later log index than the one before. floor is the highest version the
//     model knows was given to a write of the key so far; a version learned later must
//     be above it.
//   - A write whose outcome is unknown (timeout, reset, a node killed mid-call, a 5xx)
//     has no version. If porcupine applies it, the entry's version becomes unknown
//     (known=false) until an observation re-anchors it: a get that returns the entry's
//     value (values are unique, so the value names the write) or a CAS conflict, which
//     reports the current version. The anchored version must be above floor.
//   - An unknown op is recorded with Return after the end of the history, so porcupine
//     may linearize it at any point after its call, including after every other op,
//     which is the same as "never happened" for the rest of the history. Step therefore
//     only needs the "it took effect" transition for it; for an unknown CAS or delete
//     that transition is "whatever the op would have done in this state", which may be
//     to change nothing.
//   - A CAS with IfVersion x can succeed only while the version is known and equal to x
//     (0: absent; an absent key's version is 0, as in the daemon's checkVersion). While
//     the version is unknown it cannot be x: x was observed before the CAS was called,
//     that observation anchored the version, so an unknown version belongs to a later
//     write, whose Raft index is higher than x.
//   - A conflict reports the current version c: it needs c != x and c equal to the
//     known version (or, when unknown, above floor, which anchors it).
//   - Deletes: ok with the deletion's version (needs the key present), not_found (needs
//     it absent). A delete leaves the key absent, at version 0 for CAS purposes, with
//     the deletion's version as the new floor.
//
// Reads that fail are left out of the history: they have no effect. Ops are partitioned
// by key, so each key is checked on its own.

// linOpKind is the kind of an operation of the linearizability check.
type linOpKind int

const (
	linGet linOpKind = iota
	linSet
	linCAS
	linDelete
)

func (k linOpKind) String() string {
	switch k {
	case linGet:
		return "get"
	case linSet:
		return "set"
	case linCAS:
		return "cas"
	case linDelete:
		return "del"
	}
	return "?"
}

// linInput is the input of an operation: the key, the value written (set, cas) and the
// expected version (cas).
type linInput struct {
	Kind      linOpKind
	Key       string
	Value     string
	IfVersion uint64
}

// linResult is how an operation ended.
type linResult int

const (
	// linOK: get found the key (Value, Version); a write applied at Version.
	linOK linResult = iota
	// linAbsent: get or delete found no such key (not_found).
	linAbsent
	// linConflict: a CAS failed; Version is the key's current version.
	linConflict
	// linUnknown: the outcome is unknown; the op may or may not have taken effect.
	linUnknown
)

func (r linResult) String() string {
	switch r {
	case linOK:
		return "ok"
	case linAbsent:
		return "absent"
	case linConflict:
		return "conflict"
	case linUnknown:
		return "unknown"
	}
	return "?"
}

// linOutput is the output of an operation.
type linOutput struct {
	Result  linResult
	Value   string // get: the value read
	Version uint64
}

// linState is the model state of one key.
type linState struct {
	Present bool
	Value   string
	// Version is the entry's version when Known (0 when absent).
	Version uint64
	Known   bool
	// Floor is the highest version known to have been given to a write of this key.
	Floor uint64
}

// anchor returns s with its version learned to be v, and whether v is consistent.
func (s linState) anchor(v uint64) (bool, linState) {
	if s.Known {
		return s.Version == v, s
	}
	if v <= s.Floor {
		return false, s
	}
	s.Known, s.Version, s.Floor = true, v, v
	return true, s
}

// written returns s after a write of the key that left it present with value, at
// version v (known) or an unknown version (v == 0).
func (s linState) written(value string, v uint64) (bool, linState) {
	if v != 0 && v <= s.Floor {
		return false, s
	}
	n := linState{Present: true, Value: value, Version: v, Known: v != 0, Floor: s.Floor}
	if v != 0 {
		n.Floor = v
	}
	return true, n
}

// deleted returns s after a deletion at version v (0: unknown).
func (s linState) deleted(v uint64) (bool, linState) {
	if v != 0 && v <= s.Floor {
		return false, s
	}
	n := linState{Known: true, Floor: s.Floor}
	if v != 0 {
		n.Floor = v
	}
	return true, n
}

// linStep is the model's Step for one key.
func linStep(state, input, output any) (bool, any) {
	s := state.(linState)
	in := input.(linInput)
	out := output.(linOutput)
	switch in.Kind {
	case linGet:
		switch out.Result {
		case linOK:
			if !s.Present || s.Value != out.Value {
				return false, s
			}
			return s.anchor(out.Version)
		case linAbsent:
			return !s.Present, s
		case linUnknown:
			return true, s
		}
	case linSet:
		switch out.Result {
		case linOK:
			return s.written(in.Value, out.Version)
		case linUnknown:
			return s.written(in.Value, 0)
		}
	case linCAS:
		matches := s.Known && s.Version == in.IfVersion
		switch out.Result {
		case linOK:
			if !matches {
				return false, s
			}
			return s.written(in.Value, out.Version)
		case linConflict:
			if out.Version == in.IfVersion {
				return false, s
			}
			if out.Version == 0 {
				return !s.Present, s
			}
			if !s.Present {
				return false, s
			}
			return s.anchor(out.Version)
		case linUnknown:
			if !matches {
				return true, s // applied, it failed: no change
			}
			return s.written(in.Value, 0)
		}
	case linDelete:
		switch out.Result {
		case linOK:
			if !s.Present {
				return false, s
			}
			return s.deleted(out.Version)
		case linAbsent:
			return !s.Present, s
		case linUnknown:
			if !s.Present {
				return true, s
			}
			return s.deleted(0)
		}
	}
	return false, s
}

// linModel is the porcupine model of the configuration store, partitioned by key.
func linModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range history {
				k := op.Input.(linInput).Key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() any { return linState{Known: true} },
		Step: linStep,
		DescribeOperation: func(input, output any) string {
			in := input.(linInput)
			out := output.(linOutput)
			var call string
			switch in.Kind {
			case linGet:
				call = fmt.Sprintf("get(%s)", in.Key)
			case linSet:
				call = fmt.Sprintf("set(%s, %s)", in.Key, in.Value)
			case linCAS:
				call = fmt.Sprintf("cas(%s, %s, if=%d)", in.Key, in.Value, in.IfVersion)
			case linDelete:
				call = fmt.Sprintf("del(%s)", in.Key)
			}
			switch {
			case out.Result == linOK && in.Kind == linGet:
				return fmt.Sprintf("%s -> %s@%d", call, out.Value, out.Version)
			case out.Result == linOK, out.Result == linConflict:
				return fmt.Sprintf("%s -> %s@%d", call, out.Result, out.Version)
			}
			return fmt.Sprintf("%s -> %s", call, out.Result)
		},
		DescribeState: func(state any) string {
			s := state.(linState)
			ver := "?"
			if s.Known {
				ver = fmt.Sprint(s.Version)
			}
			if !s.Present {
				return fmt.Sprintf("absent@%s (floor %d)", ver, s.Floor)
			}
			return fmt.Sprintf("%s@%s (floor %d)", s.Value, ver, s.Floor)
		},
	}
}

// linOp builds an operation for the hand-written histories of TestLinModel.
func linOp(client int, call, ret int64, in linInput, out linOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// TestLinModel checks the model on hand-written histories, so that it cannot be
// trivially permissive: each illegal history must be rejected.
func TestLinModel(t *testing.T) {
	t.Parallel()
	const end = 1000 // after every other op: the return of an unknown op
	set := func(v string) linInput { return linInput{Kind: linSet, Key: "k", Value: v} }
	cas := func(v string, x uint64) linInput { return linInput{Kind: linCAS, Key: "k", Value: v, IfVersion: x} }
	get := linInput{Kind: linGet, Key: "k"}
	del := linInput{Kind: linDelete, Key: "k"}
	ok := func(v uint64) linOutput { return linOutput{Result: linOK, Version: v} }
	got := func(val string, v uint64) linOutput { return linOutput{Result: linOK, Value: val, Version: v} }
	absent := linOutput{Result: linAbsent}
	conflict := func(v uint64) linOutput { return linOutput{Result: linConflict, Version: v} }
	unknown := linOutput{Result: linUnknown}

	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"sequential set get cas", []porcupine.Operation{
			linOp(0, 0, 1, get, absent),
			linOp(0, 2, 3, set("a"), ok(5)),
			linOp(1, 4, 5, get, got("a", 5)),
			linOp(1, 6, 7, cas("b", 5), ok(9)),
			linOp(0, 8, 9, cas("c", 5), conflict(9)),
			linOp(0, 10, 11, del, ok(12)),
			linOp(1, 12, 13, cas("d", 0), ok(14)),
			linOp(1, 14, 15, get, got("d", 14)),
		}, porcupine.Ok},
		{"concurrent get sees the old or the new value", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(0, 2, 6, set("b"), ok(7)),
			linOp(1, 3, 4, get, got("a", 5)),
			linOp(2, 3, 5, get, got("b", 7)),
		}, porcupine.Ok},
		{"stale read: a value overwritten before the get's call", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(0, 2, 3, set("b"), ok(7)),
			linOp(1, 4, 5, get, got("a", 5)),
		}, porcupine.Illegal},
		{"get after a completed set finds nothing", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, 3, get, absent),
		}, porcupine.Illegal},
		{"right value, wrong version", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, 3, get, got("a", 6)),
		}, porcupine.Illegal},
		{"versions go backwards", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(7)),
			linOp(0, 2, 3, set("b"), ok(5)),
		}, porcupine.Illegal},
		{"cas succeeds on a stale version", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(0, 2, 3, set("b"), ok(7)),
			linOp(1, 4, 5, cas("c", 5), ok(9)),
		}, porcupine.Illegal},
		{"cas conflicts on the current version", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, 3, cas("c", 5), conflict(8)),
		}, porcupine.Illegal},
		{"cas 0 succeeds on a present key", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, 3, cas("c", 0), ok(8)),
		}, porcupine.Illegal},
		{"unknown set that took effect is seen and anchored", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, end, set("u"), unknown),
			linOp(0, 3, 4, get, got("u", 8)),
			linOp(0, 5, 6, cas("c", 8), ok(9)),
		}, porcupine.Ok},
		{"unknown set that never took effect", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, end, set("u"), unknown),
			linOp(0, 3, 4, get, got("a", 5)),
			linOp(0, 5, 6, cas("c", 5), ok(9)),
		}, porcupine.Ok},
		{"unknown set seen with a version below an older write", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, end, set("u"), unknown),
			linOp(0, 3, 4, get, got("u", 4)),
		}, porcupine.Illegal},
		{"unknown set seen before it was called", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(0, 2, 3, get, got("u", 8)),
			linOp(1, 4, end, set("u"), unknown),
		}, porcupine.Illegal},
		{"value seen at two versions", []porcupine.Operation{
			linOp(1, 0, end, set("u"), unknown),
			linOp(0, 1, 2, get, got("u", 8)),
			linOp(0, 3, 4, get, got("u", 9)),
		}, porcupine.Illegal},
		{"unknown cas, then a conflict names its version", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, end, cas("u", 5), unknown),
			linOp(0, 3, 4, cas("c", 5), conflict(8)),
			linOp(0, 5, 6, get, got("u", 8)),
		}, porcupine.Ok},
		{"unknown delete took effect", []porcupine.Operation{
			linOp(0, 0, 1, set("a"), ok(5)),
			linOp(1, 2, end, del, unknown),
			linOp(0, 3, 4, get, absent),
			linOp(0, 5, 6, del, absent),
			linOp(0, 7, 8, cas("b", 0), ok(11)),
		}, porcupine.Ok},
		{"delete of an absent key succeeds", []porcupine.Operation{
			linOp(0, 0, 1, del, ok(3)),
		}, porcupine.Illegal},
	}
	for _, tc := range cases {
		res, _ := porcupine.CheckOperationsVerbose(linModel(), tc.ops, 10*time.Second)
		if res != tc.want {
			t.Errorf("%s: checker says %s, want %s", tc.name, res, tc.want)
		}
	}
}
