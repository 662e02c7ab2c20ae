package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestTwoNodePeerDown: in a 2-node cluster whose non-master node is down, status on the
// master says configuration writes are unavailable and why, mail intake goes on, and
// `delete --force` removes the dead peer the same safe way as a forced promote: the
// survivor leads alone in a new epoch, and the deleted node, when it comes back, is
// told it was removed.
func TestTwoNodePeerDown(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 2, false)
	mc.form()
	setConfig(t, mc.Nodes, keyRelayDomains, mailDomain)
	survivor, rest := mc.roles()
	dead := rest[0]
	deadCID := selfRow(t, dead).CID
	dead.Kill()

	testutil.Poll(t, "status warns that writes are unavailable", 20*time.Second, func() error {
		st, err := survivor.Status()
		if err != nil {
			return err
		}
		if st.Cluster == nil || len(st.Cluster.Warnings) == 0 || !strings.Contains(st.Cluster.Warnings[0], "writes are unavailable") ||
			!strings.Contains(st.Cluster.Warnings[0], "voters") {
			return fmt.Errorf("cluster %+v", st.Cluster)
		}
		return nil
	})
	// Mail intake does not need the quorum.
	mustSend(t, mc.addr(survivor), mailMsg("while-alone", 2000))

	errOut := survivor.CLIFail("delete", fmt.Sprint(deadCID))
	if !strings.Contains(errOut, "delete --force") {
		t.Fatalf("delete without --force in a cluster without quorum said %q", errOut)
	}
	out := survivor.CLI("delete", "--force", "--yes", fmt.Sprint(deadCID))
	if !strings.Contains(out, "join token rotated") {
		t.Errorf("delete --force did not rotate the join token, which the dead node knows: %q", out)
	}
	survivor.WaitMaster(15 * time.Second)
	survivor.CLI("config", "set", "after/delete", "ok")
	st, err := survivor.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 1 || st.Cluster.Epoch != 2 {
		t.Fatalf("after delete --force: epoch %d, nodes %+v", st.Cluster.Epoch, st.Nodes)
	}

	dead.Start()
	testutil.Poll(t, "the deleted node learns it was removed", 20*time.Second, func() error {
		st, err := dead.Status()
		if err != nil {
			return err
		}
		r := st.Nodes[0]
		if r.Role != api.RoleNone || r.State != api.StateDown || !strings.Contains(r.Error, "removed") {
			return fmt.Errorf("row %+v", r)
		}
		return nil
	})
	// Deleted while it was down, it wipes the cluster's state once it learns so.
	testutil.Poll(t, "the deleted node wipes the CA key", 20*time.Second, func() error {
		if got := filesHolding(t, dead.DataDir, []byte("ca_key_pem"), []byte("join_token_salt")); len(got) > 0 {
			return fmt.Errorf("the CA key or token salt is still in %v", got)
		}
		return nil
	})
	if errOut := dead.CLIFail("config", "set", "split", "brain"); !strings.Contains(errOut, "removed") {
		t.Fatalf("write on the deleted node said %q", errOut)
	}
	if r := selfRow(t, survivor); r.Role != api.RoleMaster {
		t.Fatalf("the deleted node disturbed the survivor: %+v", r)
	}
}
