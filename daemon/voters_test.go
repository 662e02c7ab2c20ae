package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// tcpLayer is a plain TCP raft.StreamLayer on 127.0.0.1.
type tcpLayer struct{ net.Listener }

func (l tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// roundTrip answers the cluster RPC of a test daemon.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// leaderDaemon is a Daemon with just what the master's voter duty uses: a single-voter
// Raft node that leads, a state machine with a cluster of the given members (CID 1 is
// this node), and an RPC client that rt answers.
func leaderDaemon(t *testing.T, rt http.RoundTripper, members ...fsm.Member) *Daemon {
	t.Helper()
	return leaderDaemonOf(t, rt, testCreate(), nil, members...)
}

// testCreate is the cluster of leaderDaemon: a CA and a join token of placeholders.
func testCreate() fsm.CreateCluster {
	return fsm.CreateCluster{ClusterID: "c-1", CreatedAt: time.Unix(1, 0).UTC(),
		CACertPEM:     []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
		CAKeyPEM:      []byte("-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n"),
		JoinTokenSalt: []byte("salt"), JoinTokenHash: make([]byte, 32)}
}

// leaderDaemonOf is leaderDaemon with the cluster that create makes (its founder is
// members[0]) and, if tune is not nil, Raft timers of its choosing.
func leaderDaemonOf(t *testing.T, rt http.RoundTripper, create fsm.CreateCluster, tune func(*raftnode.Config), members ...fsm.Member) *Daemon {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := tcpLayer{ln}
	d := &Daemon{cfg: DefaultConfig(), logger: hclog.NewNullLogger(), fsm: fsm.New(), stop: make(chan struct{}),
		peer: cluster.NewClient(&http.Client{Transport: rt})}
	d.metrics = newMetrics(d)
	rc := raftnode.DefaultConfig()
	rc.Dir, rc.LocalID, rc.Address, rc.Bootstrap = t.TempDir(), "1", raft.ServerAddress(ln.Addr().String()), true
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	if tune != nil {
		tune(&rc)
	}
	n, err := raftnode.New(rc, d.fsm, func() raft.StreamLayer { return layer })
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	d.raftp.Store(n)
	d.members = newMemberView(d)
	d.writes = newWriter(d)
	d.voters = newVoterReconciler(d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitLeader(ctx, d.rn()); err != nil {
		t.Fatal(err)
	}
	create.Founder = members[0]
	if _, err := d.writes.applyLocal(ctx, &create); err != nil {
		t.Fatal(err)
	}
	for _, m := range members[1:] {
		if _, err := d.writes.applyLocal(ctx, &fsm.AddMember{Member: m}); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func testMember(cid uint64, s fsm.Suffrage) fsm.Member {
	return fsm.Member{CID: cid, Name: "pmg" + string(rune('0'+cid)), IP: "127.0.0." + string(rune('0'+cid)), Port: 8006,
		Fingerprint: "AA:BB:0" + string(rune('0'+cid)), Suffrage: s, JoinedAt: time.Unix(int64(cid), 0).UTC(), Epoch: 1}
}

// TestReconcileNoLockAcrossRPC: the master asks a non-voter how far it has applied with
// the membership turn free (a slow or hung peer must not block admit, delete or transfer), and a
// node that has applied nothing is not promoted.
func TestReconcileNoLockAcrossRPC(t *testing.T) {
	var asked, heldDuring atomic.Int32
	var d *Daemon
	rt := roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == cluster.PathNode {
			asked.Add(1)
			done, cancel := context.WithCancel(context.Background())
			cancel() // take with an ended context: takes only a free turn
			if release, err := d.memberTurn.take(done); err != nil {
				heldDuring.Add(1)
			} else {
				release()
			}
		}
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r,
			Body: io.NopCloser(strings.NewReader(`{"applied_index":0}`))}, nil
	})
	me := testMember(1, fsm.Voter)
	d = leaderDaemon(t, rt, me, testMember(2, fsm.Nonvoter))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.voters.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if asked.Load() == 0 {
		t.Fatal("the non-voter was never asked how far it has applied")
	}
	if heldDuring.Load() != 0 {
		t.Fatalf("the membership turn was held across %d of %d catch-up RPCs", heldDuring.Load(), asked.Load())
	}
	cfg, err := d.rn().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Servers {
		if s.ID == "2" && s.Suffrage != raft.Nonvoter {
			t.Fatalf("cid 2 with nothing applied is %v", s.Suffrage)
		}
	}
	if len(cfg.Servers) != 2 {
		t.Fatalf("raft configuration %+v: cid 2 not added as non-voter", cfg.Servers)
	}
}
