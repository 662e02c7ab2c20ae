package cli

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// joinStuck says why a joined node n is not a full member after wait, from the last
// status st it answered: its own reason, which members it reaches and which not (the
// master of the admission first), and the two ways out: fix the network (the node goes
// on by itself) or undo the admission with pmgcm delete on the master.
func joinStuck(st *api.Status, n *api.Node, jr *api.JoinResponse, wait time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node %s(%d) was admitted (cid %d) but is not a full member after %s: state %s",
		n.Name, n.CID, jr.CID, wait, orDash(n.State))
	if n.Reason != "" {
		fmt.Fprintf(&b, ": %s", oneLine(n.Reason))
	}
	b.WriteString("\n")
	var reach, cannot []string
	masterName, masterDown := jr.MasterAddress, false
	for _, r := range st.Nodes {
		if r.Local {
			continue
		}
		label := fmt.Sprintf("%s(%d) %s", r.Name, r.CID, r.IP)
		isMaster := jr.MasterAddress != "" && jr.MasterAddress == net.JoinHostPort(r.IP, strconv.Itoa(r.Port))
		if isMaster {
			label += " (master)"
			masterName = fmt.Sprintf("%s, %s", r.Name, r.IP)
		}
		if r.State == api.StateDown {
			if isMaster {
				masterDown = true
			}
			cannot = append(cannot, label+": "+oneLine(r.Error))
		} else {
			reach = append(reach, label)
		}
	}
	if len(reach) > 0 {
		fmt.Fprintf(&b, "it reaches %s\n", strings.Join(reach, ", "))
	}
	if len(cannot) > 0 {
		fmt.Fprintf(&b, "it cannot reach %s\n", strings.Join(cannot, "; "))
	}
	switch {
	case masterDown:
		b.WriteString("the master cannot send it the cluster's log: fix the network between this node and the master")
	case len(cannot) > 0:
		b.WriteString("fix the network between this node and the members it cannot reach")
	default:
		b.WriteString("it has not caught up yet: see pmgcm status")
	}
	fmt.Fprintf(&b, " (it goes on catching up by itself), or undo the join with 'pmgcm delete %d' on the master (%s)",
		jr.CID, masterName)
	return b.String()
}
