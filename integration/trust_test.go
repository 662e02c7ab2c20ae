package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/transport"
)

// caKeyRe finds the cluster CA key in a node's Raft files: the CreateCluster command in
// raft.db and the state in snapshots carry it as a JSON []byte (base64).
var caKeyRe = regexp.MustCompile(`"ca_key_pem":"([A-Za-z0-9+/=]{100,})"`)

// filesHolding returns the files under dir (relative) whose bytes contain any of subs.
func filesHolding(t testing.TB, dir string, subs ...[]byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range subs {
			if bytes.Contains(b, s) {
				rel, _ := filepath.Rel(dir, path)
				out = append(out, rel)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// caKeyOf returns the base64 of the cluster CA key as it is in n's Raft files.
func caKeyOf(t testing.TB, n *Node) string {
	t.Helper()
	var key string
	testutil.Poll(t, n.Name+"'s raft files hold the CA key", 15*time.Second, func() error {
		_ = filepath.WalkDir(filepath.Join(n.DataDir, "raft"), func(path string, e os.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() || key != "" {
				return nil
			}
			b, _ := os.ReadFile(path)
			if m := caKeyRe.FindSubmatch(b); m != nil {
				key = string(m[1])
			}
			return nil
		})
		if key == "" {
			return fmt.Errorf("no ca_key_pem in %s", filepath.Join(n.DataDir, "raft"))
		}
		return nil
	})
	return key
}

// TestDeleteRotatesTokenAndWipes: pmgcm delete says it rotated the join token, the old
// token is refused from then on, and the deleted node, once it learns of its removal,
// keeps no copy of the CA key (nor the state that carries it and the token salt)
// anywhere in its data directory, while its own key, node file and mail stay.
func TestDeleteRotatesTokenAndWipes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	logNotable(t, c)
	for _, n := range c.Nodes[:2] {
		n.Start()
	}
	m, victim, newcomer := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	m.CLI("create")
	m.WaitMaster(15 * time.Second)
	oldArgs := joinArgs(t, m)
	victim.CLI(append(oldArgs, "--yes")...)
	c.waitAllActive(c.Nodes[:2], 30*time.Second)

	key := caKeyOf(t, victim)
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := filesHolding(t, victim.DataDir, []byte(key), raw); len(got) == 0 {
		t.Fatal("the CA key is nowhere in the victim's data directory before the delete: the check below cannot fail")
	}
	vcid := localRow(mustStatus(t, victim)).CID

	out := cliRetry(t, m, "delete", strconv.FormatUint(vcid, 10))
	mustContain(t, "delete output", out, fmt.Sprintf("deleted cid %d", vcid), "join token rotated")
	if newArgs := joinArgsRetry(t, m); newArgs[len(newArgs)-1] == oldArgs[len(oldArgs)-1] {
		t.Fatal("join-cmd prints the same token after the delete")
	}

	// The old token no longer admits anyone.
	newcomer.Start()
	before := viewOf(t, m)
	msg := newcomer.CLIFail(append(oldArgs, "--yes")...)
	mustContain(t, "join with the token of before the delete", msg, "join token is not valid")
	checkUnchanged(t, "a join with the old token", m, before)

	// The deleted node wipes the cluster's state once it learns it was removed.
	testutil.Poll(t, victim.Name+" has wiped the CA key", 30*time.Second, func() error {
		if got := filesHolding(t, victim.DataDir, []byte(key), raw, []byte("ca_key_pem"), []byte("join_token_salt")); len(got) > 0 {
			return fmt.Errorf("the CA key or token salt is still in %v", got)
		}
		return nil
	})
	mustContain(t, victim.Name+"'s log", victim.Log(), "was wiped")
	for _, f := range []string{"node.json", "tls/node.key", "tls/node.crt"} {
		if _, err := os.Stat(filepath.Join(victim.DataDir, f)); err != nil {
			t.Errorf("the removed node lost its %s: %v", f, err)
		}
	}
	st := mustStatus(t, victim)
	if row := localRow(st); row == nil || row.Error != "removed from the cluster" {
		t.Errorf("the removed node's status: %+v", st)
	}

	// Restarted, it stays removed and wiped, and it can join again with the new token.
	victim.Stop()
	victim.Start()
	if got := filesHolding(t, victim.DataDir, []byte(key), raw); len(got) > 0 {
		t.Fatalf("after a restart the CA key is back in %v", got)
	}
	victim.CLI(append(joinArgsRetry(t, m), "--yes")...)
	c.waitAllActive(c.Nodes[:2], 30*time.Second)
}

// TestJoinTokenTTL: join-cmd --ttl prints the PMGCM_JOIN_TOKEN= form and the expiry; the
// token admits a node before it expires, and is refused after with a message that says
// so and what to do; join-cmd then refuses to print it.
func TestJoinTokenTTL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	for _, n := range c.Nodes {
		n.Start()
	}
	m := c.Nodes[0]
	m.CLI("create")
	m.WaitMaster(15 * time.Second)

	stdout, stderr, err := m.run("join-cmd", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "join-cmd --ttl stderr", stderr, "rotated", "expires at")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "PMGCM_JOIN_TOKEN=") || strings.Contains(last, "--token") {
		t.Fatalf("join-cmd's last line %q is not the PMGCM_JOIN_TOKEN=... pmgcm join ... form", last)
	}
	c.Nodes[1].CLI(append(parseJoinLine(t, stdout), "--yes")...)
	c.waitAllActive(c.Nodes[:2], 30*time.Second)

	// A token of one second: expired once join-cmd says so.
	stdout, _, err = m.run("join-cmd", "--ttl", "1s")
	if err != nil {
		t.Fatal(err)
	}
	args := parseJoinLine(t, stdout)
	testutil.Poll(t, "join-cmd says the token expired", 15*time.Second, func() error {
		_, stderr, err := m.run("join-cmd")
		if err == nil {
			return fmt.Errorf("join-cmd still prints the token")
		}
		if !strings.Contains(stderr, "expired") {
			return testutil.Stop(fmt.Errorf("join-cmd failed otherwise: %s", stderr))
		}
		return nil
	})
	before := viewOf(t, m)
	msg := c.Nodes[2].CLIFail(append(args, "--yes")...)
	mustContain(t, "join with an expired token", msg, "expired", "join-cmd --rotate")
	checkUnchanged(t, "a join with an expired token", m, before)
}

// postAdmit sends one join request with token over j and returns the status and the
// api error code.
func postAdmit(t *testing.T, j *joinConn, token string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"token": token, "name": "intruder", "ip": "192.0.2.7", "port": 8006,
		"public_key_pem": "", "protocol_version": 2, "state_format": 1})
	_ = j.SetDeadline(time.Now().Add(10 * time.Second))
	defer j.SetDeadline(time.Time{})
	req := fmt.Sprintf("POST /join/v1/admit HTTP/1.1\r\nHost: pmgcm\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(j, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(j.r, nil)
	if err != nil {
		t.Fatalf("join admit: %v", err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Code
}

// TestWrongJoinTokensBackOff: 200 wrong tokens from one address are refused with a
// growing back-off after the first five and make a few log lines, not one per try; a
// node joining from another address with the right token gets in meanwhile.
func TestWrongJoinTokensBackOff(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	for _, n := range c.Nodes {
		n.Start()
	}
	m := c.Nodes[0]
	m.CLI("create")
	m.WaitMaster(15 * time.Second)
	addr := net.JoinHostPort(m.IP, strconv.Itoa(m.Port))
	src := testutil.IPs(1)[0]

	j := dialJoin(t, src, addr)
	counts := map[string]int{}
	start := time.Now()
	for i := 0; i < 200; i++ {
		code, apiCode := postAdmit(t, j, fmt.Sprintf("wrong-%d", i))
		counts[fmt.Sprintf("%d %s", code, apiCode)]++
		if i < 5 && apiCode != api.CodeBadToken {
			t.Fatalf("try %d: %d %s, want %s", i, code, apiCode, api.CodeBadToken)
		}
	}
	t.Logf("200 wrong tokens in %s: %v", time.Since(start).Round(time.Millisecond), counts)
	if counts[fmt.Sprintf("%d %s", http.StatusTooManyRequests, api.CodeThrottled)] < 190 {
		t.Fatalf("wrong tokens were not throttled: %v", counts)
	}

	// Another address with the right token is not affected.
	c.Nodes[1].CLI(append(joinArgs(t, m), "--yes")...)
	c.waitAllActive(c.Nodes, 30*time.Second)

	log := m.Log()
	if got := countLines(log, "join", "refused"); got < 1 || got > 4 {
		t.Fatalf("%d log lines about refused joins for 200 wrong tokens, want the first and a summary", got)
	}
}

// rpcPost sends a cluster RPC as the holder of mux's certificate.
func rpcPost(t *testing.T, mux *transport.Mux, to *Node, path string, body []byte) (int, api.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+net.JoinHostPort(to.IP, strconv.Itoa(to.Port))+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := mux.HTTPClient(transport.ChanRPC).Do(req)
	if err != nil {
		t.Fatalf("%s to %s: %v", path, to.Name, err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// TestMemberCannotForge: a member (its own certificate, over the cluster RPC) gets a
// forwarded configuration write applied, but a forged AddMember, SetEpoch or a join
// token no member could show is refused and changes nothing; and it cannot record a
// certificate, however valid (issued with the CA key every member holds), for another
// member.
func TestMemberCannotForge(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	logNotable(t, c)
	c.form()
	m, rest := c.roles()
	member := rest[0]
	mux := identityOf(t, member)
	st := mustStatus(t, m)
	var masterRow api.Node
	for _, r := range st.Nodes {
		if r.Role == api.RoleMaster {
			masterRow = r
		}
	}

	enc := func(cmd fsm.Command) []byte {
		b, err := fsm.Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// What members forward is applied: the check below is not a refusal of everything.
	if code, e := rpcPost(t, mux, m, "/rpc/v1/apply", enc(fsm.ConfigSet{Key: "forwarded/ok", Value: []byte("v")})); code != http.StatusOK {
		t.Fatalf("a forwarded config write: %d %+v", code, e)
	}
	before := viewOf(t, m)
	for _, cmd := range []fsm.Command{
		fsm.AddMember{Member: fsm.Member{CID: 3, Name: "ghost", IP: "192.0.2.9", Port: 8006, Fingerprint: "AA:BB", Suffrage: fsm.Voter}},
		fsm.SetEpoch{Epoch: 9, Members: []fsm.Member{{CID: 2, Name: member.Name, IP: member.IP, Port: member.Port, Fingerprint: "AA:BB", Suffrage: fsm.Voter, Epoch: 9}}},
		fsm.SetJoinToken{Hash: bytes.Repeat([]byte{7}, 32), Salt: []byte("chosen")},
		fsm.RemoveMember{CID: masterRow.CID},
		fsm.UpdateMember{Member: fsm.Member{CID: masterRow.CID, Name: masterRow.Name, IP: masterRow.IP, Port: m.Port,
			Fingerprint: "AA:BB", Suffrage: fsm.Voter, Epoch: 1}},
	} {
		code, e := rpcPost(t, mux, m, "/rpc/v1/apply", enc(cmd))
		if code != http.StatusForbidden {
			t.Errorf("a forged %s: %d %+v, want 403", cmd.Type(), code, e)
		}
	}
	checkUnchanged(t, "forged commands", m, before)

	// A certificate for the master, signed by the CA (whose key the member holds).
	caCert, err := os.ReadFile(filepath.Join(member.DataDir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	keyB64 := caKeyOf(t, member)
	caKey, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := transport.ParseCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := ca.IssueNodeCert(key.Public(), masterRow.Name, net.ParseIP(masterRow.IP), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"cid": masterRow.CID, "cert_pem": forged})
	code, e := rpcPost(t, mux, m, "/rpc/v1/record-cert", body)
	if code != http.StatusForbidden || !strings.Contains(e.Message, "only its own certificate") {
		t.Errorf("recording the master's certificate as cid %d: %d %+v, want 403", localRow(mustStatus(t, member)).CID, code, e)
	}
	checkUnchanged(t, "a forged certificate record", m, before)
}
