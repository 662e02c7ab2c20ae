package daemon

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/sysinfo"
)

// statusTimeout bounds how long status waits for one node, so that a node that is down
// or paused does not make status slow: every node is asked at once.
const statusTimeout = 1500 * time.Millisecond

// status returns the status of the cluster as this node sees it, each node's row read
// live from that node.
func (sr *statusReporter) status(ctx context.Context) api.Status {
	local := sr.localNode()
	me := sr.host.self()
	switch st := me.standing(); st.kind {
	case standRemoved:
		local.Role, local.State = api.RoleNone, api.StateDown
		local.Error = "removed from the cluster"
		return api.Status{
			Cluster: &api.Cluster{ID: st.removedFrom, Warnings: []string{fmt.Sprintf(
				"this node was removed from cluster %s; to come back: pmgcm join <master_ip> (all data on this node is replaced)", st.removedFrom)}},
			Nodes: []api.Node{local},
		}
	case standFenced:
		f := st.fence
		local.Role, local.State = api.RoleNone, api.StateDown
		local.Error = fmt.Sprintf("fenced: superseded at epoch %d", f.Epoch)
		return api.Status{
			Cluster: &api.Cluster{ID: f.ClusterID, Warnings: []string{fmt.Sprintf(
				"this node was superseded: a forced promotion made cid %d (%s, %s) master at epoch %d; this node takes no part in the cluster and accepts no writes. Bring it back with: pmgcm sync --master_ip %s",
				f.MasterCID, f.MasterName, f.MasterIP, f.Epoch, f.MasterIP)}},
			Nodes: []api.Node{local},
		}
	}
	cl := sr.fsm.Cluster()
	members := sr.fsm.Members()
	st := api.Status{}
	switch {
	case cl != nil:
		st.Cluster = &api.Cluster{ID: cl.ID, Epoch: cl.Epoch, CreatedAt: cl.CreatedAt}
	case sr.trust.knownCluster() != "":
		// Joined but not caught up yet, or restarted and still replaying the log: the
		// trusted member list stands in.
		p := sr.peers.Load()
		st.Cluster = &api.Cluster{ID: p.ClusterID, Epoch: p.Epoch}
		members = p.Members
	default:
		local.Role = api.RoleNone
		return api.Status{Nodes: []api.Node{local}}
	}
	_, leaderID := sr.host.rn().Leader()
	epoch := st.Cluster.Epoch
	rows := make([]api.Node, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		if m.CID == me.CID {
			rows[i] = local
			sr.ops.noteLocalClock(&rows[i])
			continue
		}
		if m.Fenced(epoch) {
			master := sr.cfg.IP
			if mm, ok := sr.members.master(); ok {
				master = mm.IP
			}
			rows[i] = api.Node{State: api.StateDown, Error: fmt.Sprintf(
				"fenced: left in epoch %d by a forced promotion; run 'pmgcm sync --master_ip %s' on it", m.Epoch, master)}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			rows[i] = sr.remoteNode(ctx, m)
			noteClock(&rows[i], sent, time.Since(sent))
		}()
	}
	wg.Wait()
	for i, m := range members {
		rows[i].CID = m.CID
	}
	leaderID = sr.honesty.leader(leaderID, rows)
	var leaderApplied uint64
	voters, active := 0, 0
	for i, m := range members {
		r := &rows[i]
		r.CID, r.Name, r.IP, r.Port = m.CID, m.Name, m.IP, m.Port
		r.Fingerprint, r.Suffrage = m.Fingerprint, string(m.Suffrage)
		r.Role = api.RoleNode
		if raftnode.ServerID(m.CID) == leaderID {
			r.Role = api.RoleMaster
			st.Cluster.LeaderCID = m.CID
			leaderApplied = r.AppliedIndex
		}
		if !m.Fenced(epoch) {
			active++
			if m.Suffrage == fsm.Voter {
				voters++
			}
		}
	}
	for i := range rows {
		r := &rows[i]
		switch {
		case r.State == api.StateDown, r.State == api.StateSyncing, r.State == api.StateMaintenance:
		case r.AppliedIndex+catchUpSlack < leaderApplied:
			r.State = api.StateSyncing
		case r.Mail != nil && (r.Mail.BacklogMessages > 0 || r.Mail.BacklogBytes > 0 || !r.Mail.BacklogKnown):
			r.State = api.StateSyncing // still receiving mail from the other nodes
		case r.Suffrage == string(fsm.Nonvoter) && voters < voterpolicy.WantVoters(active):
			r.State = api.StateSyncing // caught up, about to become a voter
		default:
			r.State = api.StateActive
		}
	}
	st.Nodes = rows
	st.Cluster.Warnings = append(st.Cluster.Warnings, certWarnings(rows, time.Now())...)
	st.Cluster.Warnings = append(st.Cluster.Warnings, opsWarnings(rows, st.Cluster.LeaderCID)...)
	st.Cluster.Warnings = append(st.Cluster.Warnings, backupWarnings(rows)...)
	if leaderID == "" {
		st.Cluster.Warnings = append(st.Cluster.Warnings, "no master: configuration writes are unavailable: "+sr.quorumSummary()+" (see pmgcm promote)")
	}
	if f, ok, _ := sr.fsm.SpillFault(); ok {
		st.Cluster.Warnings = append(st.Cluster.Warnings, "this node: "+spillFaultAdvice(f))
	}
	sr.versions.status(&st)
	return st
}

// spillFaultAdvice says what a configuration value this node's disk did not give back
// means (fsm.SpillFault) and what to do.
func spillFaultAdvice(f fsm.SpillFault) string {
	return fmt.Sprintf("a configuration value could not be read back from DATA/fsm-values since %s (%d failed reads: %v): "+
		"reads of it fail and Raft snapshots fail, so the Raft log grows; restart pmgclusterd on this node, which rebuilds "+
		"the values from its Raft log and snapshot, and check the disk (dmesg)",
		f.Since.UTC().Format(time.RFC3339), f.Reads, f.Err)
}

// remoteNode asks member m for its own row.
func (sr *statusReporter) remoteNode(ctx context.Context, m fsm.Member) api.Node {
	ctx, cancel := context.WithTimeout(ctx, min(sr.cfg.RPCTimeout, statusTimeout))
	defer cancel()
	n, err := sr.peer().Node(ctx, memberAddr(m))
	if err != nil {
		return api.Node{State: api.StateDown, Error: err.Error()}
	}
	n.Local = false
	return n
}

// localNode returns this node's own row, read live.
func (sr *statusReporter) localNode() api.Node {
	rs := sr.host.rn().Stats()
	n := api.Node{
		CID: sr.host.self().CID, Name: sr.host.self().Name, IP: sr.host.self().IP, Port: sr.host.self().Port,
		State: api.StateActive, Local: true, Suffrage: rs.Suffrage,
		Term: rs.Term, LastIndex: rs.LastIndex, LastLogTerm: rs.LastLogTerm, AppliedIndex: rs.AppliedIndex,
		Fingerprint: sr.mux.Identity().Fingerprint,
	}
	if leaf := sr.mux.Identity().Leaf; leaf != nil && !sr.mux.Identity().Standalone() {
		n.CertExpires = leaf.NotAfter.UTC()
	}
	if _, id := sr.host.rn().Leader(); id != "" {
		n.MasterCID = parseCID(id)
	}
	if rs.AppliedIndex < rs.LastIndex && n.MasterCID == 0 && sr.trust.knownCluster() != "" {
		// Restarted and still waiting for a master to confirm its own log.
		n.State = api.StateSyncing
	}
	si, err := sysinfo.Read(sr.cfg.DataDir)
	if err != nil {
		sr.logger.Warn("cannot read host metrics", "error", err)
	}
	si.DaemonUptimeSeconds = time.Since(sr.started).Seconds()
	n.Sys = &si
	n.Mail = sr.mail().mailStatus()
	setBuildVersion(&n)
	sr.honesty.local(&n)
	sr.diskW.markFull(&n)
	sr.ops.fillOps(&n)
	n.Backup = sr.backups.backupStatus()
	if sr.inMaintenance() {
		n.State = api.StateMaintenance
	}
	return n
}

// quorumSummary describes, for an error without a master, which voters this node knows
// and when it last heard from a master.
func (sr *statusReporter) quorumSummary() string {
	n := sr.host.rn()
	cfg, err := n.Configuration()
	if err != nil {
		return err.Error()
	}
	var voters []string
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, fmt.Sprintf("cid %s at %s", s.ID, s.Address))
		}
	}
	since := "never"
	if lc := n.Stats().LastContact; lc > 0 {
		since = lc.Round(time.Millisecond).String() + " ago"
	}
	return fmt.Sprintf("%d voters (%s), last contact with a master %s; a master needs %d of them",
		len(voters), strings.Join(voters, ", "), since, len(voters)/2+1)
}

// reachableVoters asks each voter of this node's configuration for its status, briefly
// and in parallel, and says how many answer: for an error without a master.
func (sr *statusReporter) reachableVoters() string {
	cfg, err := sr.host.rn().Configuration()
	if err != nil {
		return err.Error()
	}
	me := raftnode.ServerID(sr.host.self().CID)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		up      = 0
		total   = 0
		missing []string
	)
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		total++
		if s.ID == me {
			up++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			_, err := sr.peer().Node(ctx, string(s.Address))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				up++
			} else {
				missing = append(missing, fmt.Sprintf("cid %s at %s", s.ID, s.Address))
			}
		}()
	}
	wg.Wait()
	sort.Strings(missing)
	out := fmt.Sprintf("%d of %d voters reachable", up, total)
	if len(missing) > 0 {
		out += " (unreachable: " + strings.Join(missing, ", ") + ")"
	}
	return out + fmt.Sprintf(", a master needs %d", total/2+1)
}
