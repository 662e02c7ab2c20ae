package fsm

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// The cost of spilling (go test -run X -bench Spill ./fsm): a Get and an applied
// ConfigSet of a 256-byte value (seq_put's) with the values in the heap and spilled.

// benchFSM applies the commands it is given at increasing indexes.
type benchFSM struct {
	b   *testing.B
	f   *FSM
	idx uint64
}

func spillBenchFSM(b *testing.B, spill bool) *benchFSM {
	b.Helper()
	f := New()
	if spill {
		if err := f.SpillTo(b.TempDir(), nil); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(f.Close)
	}
	return &benchFSM{b: b, f: f}
}

func (h *benchFSM) apply(c Command) *Result {
	data, err := Encode(c)
	if err != nil {
		h.b.Fatal(err)
	}
	h.idx++
	return h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: h.idx, Data: data}).(*Result)
}

func benchSpillGet(b *testing.B, spill bool) {
	h := spillBenchFSM(b, spill)
	v := bytes.Repeat([]byte("v"), 256)
	for i := range 1000 {
		h.apply(ConfigSet{Key: fmt.Sprintf("k/%d", i), Value: v})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := h.f.Get("k/7"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func benchSpillSet(b *testing.B, spill bool) {
	h := spillBenchFSM(b, spill)
	v := bytes.Repeat([]byte("v"), 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := h.apply(ConfigSet{Key: fmt.Sprintf("k/%d", i%1000), Value: v}); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

func BenchmarkSpillGetHeap(b *testing.B)    { benchSpillGet(b, false) }
func BenchmarkSpillGetSpilled(b *testing.B) { benchSpillGet(b, true) }
func BenchmarkSpillSetHeap(b *testing.B)    { benchSpillSet(b, false) }
func BenchmarkSpillSetSpilled(b *testing.B) { benchSpillSet(b, true) }
