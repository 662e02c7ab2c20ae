package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

func TestJoinStuckNamesWhatIsUnreachable(t *testing.T) {
	jr := &api.JoinResponse{ClusterID: "c", CID: 4, MasterAddress: "10.0.0.1:8006"}
	self := api.Node{CID: 4, Name: "n4", IP: "10.0.0.4", Port: 8006, State: api.StateSyncing, Local: true,
		Reason: "knows no master (last contact with a master: never)"}
	st := &api.Status{Cluster: &api.Cluster{ID: "c"}, Nodes: []api.Node{
		{CID: 1, Name: "n1", IP: "10.0.0.1", Port: 8006, State: api.StateDown, Error: "cannot reach the node at 10.0.0.1:8006: i/o timeout"},
		{CID: 2, Name: "n2", IP: "10.0.0.2", Port: 8006, State: api.StateActive},
		self,
	}}
	got := joinStuck(st, &self, jr, 6*time.Second)
	want := "node n4(4) was admitted (cid 4) but is not a full member after 6s: state S: knows no master (last contact with a master: never)\n" +
		"it reaches n2(2) 10.0.0.2\n" +
		"it cannot reach n1(1) 10.0.0.1 (master): cannot reach the node at 10.0.0.1:8006: i/o timeout\n" +
		"the master cannot send it the cluster's log: fix the network between this node and the master (it goes on catching up by itself), or undo the join with 'pmgcm delete 4' on the master (n1, 10.0.0.1)"
	if got != want {
		t.Errorf("joinStuck =\n%s\nwant\n%s", got, want)
	}

	// A follower unreachable, the master reachable.
	st.Nodes[0].State, st.Nodes[0].Error = api.StateActive, ""
	st.Nodes[1].State, st.Nodes[1].Error = api.StateDown, "timeout"
	got = joinStuck(st, &self, jr, 6*time.Second)
	if !strings.Contains(got, "it cannot reach n2(2) 10.0.0.2: timeout\n") ||
		!strings.Contains(got, "fix the network between this node and the members it cannot reach") {
		t.Errorf("joinStuck with a follower unreachable:\n%s", got)
	}
}
