package daemon

import (
	"context"
	"encoding/base64"
	"os"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/sysinfo"
)

// status returns the status of the cluster as this node sees it.
func (d *Daemon) status(_ context.Context) api.Status {
	local := d.localNode()
	cl := d.fsm.Cluster()
	if cl == nil {
		local.Role = api.RoleNone
		return api.Status{Nodes: []api.Node{local}}
	}
	_, leaderID := d.raft.Leader()
	st := api.Status{Cluster: &api.Cluster{ID: cl.ID, Epoch: cl.Epoch, CreatedAt: cl.CreatedAt}}
	for _, m := range d.fsm.Members() {
		if raftnode.ServerID(m.CID) == leaderID {
			st.Cluster.LeaderCID = m.CID
		}
		var n api.Node
		if m.CID == d.node.CID {
			n = local
		} else {
			n = api.Node{State: api.StateDown, Error: "not reachable"}
		}
		n.CID, n.Name, n.IP, n.Port = m.CID, m.Name, m.IP, m.Port
		n.Fingerprint, n.Suffrage = m.Fingerprint, string(m.Suffrage)
		n.Role = api.RoleNode
		if raftnode.ServerID(m.CID) == leaderID {
			n.Role = api.RoleMaster
		}
		st.Nodes = append(st.Nodes, n)
	}
	if leaderID == "" {
		st.Cluster.Warnings = append(st.Cluster.Warnings,
			"no master: configuration writes are unavailable until a majority of voters is up (see pmgcm promote)")
	}
	return st
}

// localNode returns this node's own row, read live.
func (d *Daemon) localNode() api.Node {
	rs := d.raft.Stats()
	n := api.Node{
		CID: d.node.CID, Name: d.node.Name, IP: d.node.IP, Port: d.node.Port,
		State: api.StateActive, Local: true, Suffrage: rs.Suffrage,
		Term: rs.Term, LastIndex: rs.LastIndex, AppliedIndex: rs.AppliedIndex,
		Fingerprint: d.mux.Identity().Fingerprint,
	}
	if rs.AppliedIndex < rs.CommitIndex {
		n.State = api.StateSyncing
	}
	si, err := sysinfo.Read(d.cfg.DataDir)
	if err != nil {
		d.logger.Warn("cannot read host metrics", "error", err)
	}
	si.DaemonUptimeSeconds = time.Since(d.started).Seconds()
	n.Sys = &si
	return n
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }
