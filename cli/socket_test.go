package cli

import (
	"bytes"
	"context"
	"testing"

	"github.com/pmgcm/pmgcm/api/client/clienttest"
)

// TestRunAgainstSocket runs whole commands through the real client and socket.
func TestRunAgainstSocket(t *testing.T) {
	d := &clienttest.Daemon{}
	path := clienttest.Serve(t, d)
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"--socket", path, "config", "get", "k"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if ua := d.Last().UserAgent; ua != "pmgcm/"+Version {
		t.Errorf("User-Agent %q, want pmgcm/%s", ua, Version)
	}
	if !bytes.Equal(out.Bytes(), clienttest.BinaryValue) {
		t.Errorf("stdout = %q", out.Bytes())
	}
	out.Reset()
	t.Setenv("PMGCM_SOCKET", path)
	if code := Run(context.Background(), []string{"status"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if want := "pmg5(1)              10.0.0.1        master A           00:01   0.50     0%     0%\n"; !bytes.HasSuffix(out.Bytes(), []byte(want)) {
		t.Errorf("status = %q", out.String())
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"join-cmd"}, "PMGCM_JOIN_TOKEN=tok pmgcm join 10.0.0.1 --fingerprint FP\n"},
		{[]string{"delete", "3"}, "deleted cid 3 (pmg7, 10.0.0.3)\n" +
			"warning: the join token was not rotated and the deleted node knows it: run pmgcm join-cmd --rotate\n"},
		{[]string{"promote"}, "this node is already the master (cid 1); nothing changed\n"},
		// Off a terminal --force proceeds; this node's IP comes from the status's local row.
		{[]string{"promote", "--force"}, "node pmg5(1) is now the master of epoch 3\n" +
			"fenced: cid 2, cid 3: run 'pmgcm sync --master_ip 10.0.0.1' on each to bring it back\n"},
		{[]string{"sync", "--wait", "0"}, "in sync with the master (cid 1): applied index 42\n"},
		{[]string{"sync"}, "in sync with the master (cid 1): applied index 42\nnode pmg5(1) is in sync: state A\n"},
		{[]string{"sync", "--master_ip", "10.0.0.1", "--wait", "0"}, "re-admitted by the master (cid 1) at epoch 3\n"},
		// The fake daemon's status never shows the joined node: --wait 0 only joins.
		{[]string{"join", "10.0.0.1", "--fingerprint", "FP", "--token", "tok", "--yes", "--wait", "0"},
			"joined cluster c0ffee as cid 2 (master 10.0.0.1); catching up\n"},
	} {
		out.Reset()
		errb.Reset()
		if code := Run(context.Background(), tt.args, nil, &out, &errb); code != 0 || out.String() != tt.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errb.String())
		}
	}
}

// TestRunAgainstSocketConfig runs the new config commands through the real client and
// socket.
func TestRunAgainstSocketConfig(t *testing.T) {
	path := clienttest.Serve(t, &clienttest.Daemon{})
	for _, tt := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"config", "get", "k", "--stale"}, 0, string(clienttest.BinaryValue),
			"stale read from this node: applied index 16, last contact with the master 1.5s\n"},
		{[]string{"config", "list", "mail/", "--stale"}, 0, "KEY     VERSION  SIZE\nmail/a  3        1\n",
			"stale read from this node: applied index 16, last contact with the master 1.5s\n"},
		{[]string{"config", "set", "k", "v", "--if-version", "17"}, 0, "k version 18\n", ""},
		{[]string{"config", "set", "k", "v", "--if-version", "0"}, 1, "",
			"pmgcm: version conflict on \"k\": it is at version 17, not 0\n" +
				"nothing was changed; to set it anyway, check the current value with 'pmgcm config get k', then retry with --if-version 17\n"},
		{[]string{"config", "delete", "k", "--if-version=17"}, 0, "k deleted (version 19)\n", ""},
		{[]string{"config", "watch", "mail/", "--once"}, 0, "3 mail/a set 1 bytes\n", ""},
		{[]string{"config", "watch", "--from", "4", "--once", "-o", "json"}, 0,
			`{"key":"a","version":5,"deleted":true}` + "\n", ""},
		{[]string{"config", "watch", "--from", "5", "--once", "-o", "json"}, 0,
			`{"reset":true,"next":9}` + "\n" + `{"key":"b","version":8,"value_base64":"AP/+CmGADQ=="}` + "\n",
			"watch reset at version 9: the events that follow are the whole state (all keys)\n"},
	} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"--socket", path}, tt.args...), nil, &out, &errb)
		if code != tt.code || out.String() != tt.out || errb.String() != tt.errs {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errb.String())
		}
	}
}
