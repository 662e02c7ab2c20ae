package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.DataDir, ok.IP, ok.Name = "/tmp/x", "127.0.0.1", "node1"
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Config){
		"no data dir":    func(c *Config) { c.DataDir = "" },
		"bad ip":         func(c *Config) { c.IP = "host" },
		"unspecified ip": func(c *Config) { c.IP = "0.0.0.0" },
		"port":           func(c *Config) { c.Port = 70000 },
		"name":           func(c *Config) { c.Name = "a b" },
		"smtp port":      func(c *Config) { c.SMTPPort = -1 },
		"smtp = cluster": func(c *Config) { c.SMTPPort = c.Port },
		"no socket":      func(c *Config) { c.Socket = "" },
	}
	for name, mut := range cases {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMasterAddr(t *testing.T) {
	d := &Daemon{cfg: Config{Port: 8006}}
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1:8006", "10.0.0.1:9000": "10.0.0.1:9000", "::1": "[::1]:8006", "[::1]:7": "[::1]:7"} {
		if got, err := d.masterAddr(in); err != nil || got != want {
			t.Errorf("masterAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "mail.example.com", "1.2.3:4:5"} {
		if _, err := d.masterAddr(bad); err == nil {
			t.Errorf("masterAddr(%q) accepted", bad)
		}
	}
}

func TestJoinTokenDerivation(t *testing.T) {
	key := []byte("ca key")
	a, b := joinToken(key, []byte{1}), joinToken(key, []byte{1})
	if a != b || a == joinToken(key, []byte{2}) || a == joinToken([]byte("other"), []byte{1}) {
		t.Fatal("the token must depend on exactly the CA key and the salt")
	}
	if len(hashToken(a)) != 32 {
		t.Fatal("hash is not SHA-256")
	}
}

func TestDataDirLockAndCorruptNodeFile(t *testing.T) {
	dir := t.TempDir()
	d1, err := openDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openDataDir(dir); !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second open = %v, want ErrDataDirInUse naming the pid", err)
	}
	if err := d1.writeNodeFile(nodeFile{Name: "n", IP: "127.0.0.1", Port: 1, CID: 1}); err != nil {
		t.Fatal(err)
	}
	nf, ok, err := d1.readNodeFile()
	if err != nil || !ok || nf.Format != nodeFileFormat || nf.CID != 1 {
		t.Fatalf("readNodeFile = %+v %v %v", nf, ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"format":99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d1.readNodeFile(); !errors.Is(err, ErrCorruptData) {
		t.Fatalf("other format = %v, want ErrCorruptData", err)
	}
	_ = d1.close()
	d2, err := openDataDir(dir)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	_ = d2.close()
}

// applyAll applies commands to f at increasing indexes.
func applyAll(t *testing.T, f *fsm.FSM, cmds ...fsm.Command) {
	t.Helper()
	for _, c := range cmds {
		b, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: f.AppliedIndex() + 1, Data: b}).(*fsm.Result)
		if res.Err != nil {
			t.Fatalf("%T: %v", c, res.Err)
		}
	}
}

func TestAuthorizePeerEpochs(t *testing.T) {
	f := fsm.New()
	m := func(cid uint64, fp string, epoch uint64) fsm.Member {
		return fsm.Member{CID: cid, Name: fp, IP: "127.0.0." + fp[len(fp)-1:], Port: 1, Fingerprint: fp, Suffrage: fsm.Voter, Epoch: epoch}
	}
	applyAll(t, f,
		fsm.CreateCluster{ClusterID: "c", Founder: m(1, "fp1", 1)},
		fsm.AddMember{Member: m(2, "fp2", 1)},
		fsm.AddMember{Member: m(3, "fp3", 1)},
		fsm.SetEpoch{Epoch: 2, Members: []fsm.Member{m(1, "fp1", 2), m(2, "fp2", 1), m(3, "fp3", 2)}},
	)
	d := &Daemon{fsm: f}
	d.peers.Store(&peerCache{})
	cases := []struct {
		fp   string
		ch   transport.Channel
		want bool
	}{
		{"fp3", transport.ChanRaft, true},
		{"fp2", transport.ChanAny, true},  // a fenced member passes the handshake...
		{"fp2", transport.ChanJoin, true}, // ...to learn why and ask to come back,
		{"fp2", transport.ChanRaft, false},
		{"fp2", transport.ChanRPC, false},
		{"fp9", transport.ChanAny, false}, // not a member: refused at the handshake
	}
	for _, tc := range cases {
		if err := d.authorizePeer(tc.ch, tc.fp); (err == nil) != tc.want {
			t.Errorf("authorize %s on %v = %v, want allowed=%v", tc.fp, tc.ch, err, tc.want)
		}
	}
	// The cache decides while the state machine is behind it (a restart before replay).
	d2 := &Daemon{fsm: fsm.New()}
	d2.peers.Store(&peerCache{Index: 10, ClusterID: "c", Epoch: 2, Members: []fsm.Member{m(1, "fp1", 2), m(2, "fp2", 1)}})
	if err := d2.authorizePeer(transport.ChanRaft, "fp1"); err != nil {
		t.Errorf("cached member refused: %v", err)
	}
	if err := d2.authorizePeer(transport.ChanRaft, "fp2"); err == nil {
		t.Error("cached fenced member allowed on raft")
	}
}

func TestExporterFollowsChanges(t *testing.T) {
	f := fsm.New()
	d := &Daemon{fsm: f}
	dir := t.TempDir()
	e := &exporter{d: d, dir: dir, prefixes: []string{"etc/"}}
	if err := e.load(); err != nil {
		t.Fatal(err)
	}
	applyAll(t, f,
		fsm.ConfigSet{Key: "etc/a/b.conf", Value: []byte("one")},
		fsm.ConfigSet{Key: "other", Value: []byte("no")},
	)
	if err := e.sync(); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if got := read("etc/a/b.conf"); got != "one" {
		t.Fatalf("exported %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); !os.IsNotExist(err) {
		t.Fatal("a key outside the prefix was exported")
	}
	applyAll(t, f, fsm.ConfigDelete{Key: "etc/a/b.conf"}, fsm.ConfigSet{Key: "etc/c", Value: []byte("two")})
	if err := e.sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/a/b.conf")); !os.IsNotExist(err) || read("etc/c") != "two" {
		t.Fatalf("after delete/set: b.conf %v, c %q", err, read("etc/c"))
	}
	// A replaced state (a join resets the state machine) is reconciled whole, and a file
	// the exporter did not write is left alone.
	if err := os.WriteFile(filepath.Join(dir, "mine"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Reset()
	applyAll(t, f, fsm.ConfigSet{Key: "etc/new", Value: []byte("3")})
	if err := e.sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/c")); !os.IsNotExist(err) || read("etc/new") != "3" || read("mine") != "keep" {
		t.Fatalf("after reset: c %v, new %q, mine %q", err, read("etc/new"), read("mine"))
	}
}
