package membership

import "testing"

func TestCatchUpTargetIsFixed(t *testing.T) {
	var c Targets
	// A node that has applied nothing is not caught up, however young the cluster.
	if c.Ready(2, 3, 0, 5) {
		t.Fatal("a node with nothing applied counts as caught up")
	}
	// The target stays where it was set while the master moves on.
	if c.Ready(2, 3, 4, 500) {
		t.Fatal("index 4 reached target 5")
	}
	if !c.Ready(2, 3, 5, 900) {
		t.Fatal("the node reached its target 5 but is not caught up: the target moved")
	}
}

func TestCatchUpTargetPerTermAndMember(t *testing.T) {
	var c Targets
	c.Ready(2, 3, 0, 10)
	c.Ready(2, 4, 0, 20)
	if !c.Ready(2, 3, 10, 99) || c.Ready(2, 4, 10, 99) {
		t.Fatal("targets are not per member")
	}
	// A new term (another master meanwhile) sets new targets.
	if c.Ready(3, 3, 10, 40) {
		t.Fatal("target of an earlier term kept")
	}
	c.Ready(3, 4, 10, 40)
	// Forgotten members start over.
	c.Keep([]uint64{4})
	if c.Ready(3, 3, 40, 60) {
		t.Fatal("target of a forgotten member kept")
	}
	if _, ok := c.targets[4]; !ok {
		t.Fatal("kept member's target dropped")
	}
}
