package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/api/client/clienttest"
)

// wireBody and wireMessage are the quarantined message that clienttest.Daemon serves.
var (
	wireBody    = clienttest.QuarantineBody
	wireMessage = clienttest.QuarantineMessage
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// quarantineList is a listing with the cases the table must handle.
var quarantineList = []api.QuarantineMessage{
	wireMessage,
	{ID: "01J9Z8K6T3M5", OriginCID: 1, From: "", To: []string{"postmaster@example.com"},
		Subject: "Undelivered Mail Returned to Sender: a subject long enough to be cut short",
		Size:    12345, State: api.MailReleased, Received: time.Date(2025, 2, 28, 23, 59, 59, 999, time.UTC)},
	{ID: "x3", OriginCID: 3, From: "evil@example.net", To: []string{"a@example.com"},
		Subject: "tab\tand\r\nnewline", Size: 0, State: api.MailDeleted,
		Received: time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))},
}

// runQuarantine runs pmgcm with times shown in UTC+1, whatever the machine's zone.
func runQuarantine(t *testing.T, f *fakeAPI, args ...string) result {
	t.Helper()
	return runEnv(t, context.Background(), env{loc: time.FixedZone("CET", 3600)}, f, args...)
}

func TestQuarantineList(t *testing.T) {
	f := &fakeAPI{quarantine: quarantineList}
	r := runQuarantine(t, f, "quarantine", "list")
	if r.code != ExitOK || r.stderr != "" || f.gotFilter != [3]string{} {
		t.Fatalf("exit %d, stderr %q, filter %q", r.code, r.stderr, f.gotFilter)
	}
	golden(t, "quarantine_list.golden", r.stdout)

	f = &fakeAPI{quarantine: quarantineList}
	r = runQuarantine(t, f, "quarantine", "list", "--from", "alice", "--to=@example.com", "--state", "released")
	if r.code != ExitOK || f.gotFilter != [3]string{"alice", "@example.com", "released"} {
		t.Errorf("filters: exit %d, sent %q", r.code, f.gotFilter)
	}

	r = runQuarantine(t, &fakeAPI{}, "quarantine", "list")
	if r.code != ExitOK || r.stdout != "ID  RECEIVED  FROM  TO  SIZE  STATE  SUBJECT\n" {
		t.Errorf("empty list: exit %d, %q", r.code, r.stdout)
	}
}

func TestQuarantineListJSON(t *testing.T) {
	r := runQuarantine(t, &fakeAPI{quarantine: quarantineList}, "quarantine", "list", "-o", "json")
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != ExitOK || len(got) != 3 {
		t.Fatalf("exit %d, %v: %q", r.code, err, r.stdout)
	}
	// The fields of the operator contract, snake_case, as the daemon sent them.
	for _, k := range []string{"id", "origin_cid", "from", "to", "subject", "size", "sha256", "state", "received"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, got[0])
		}
	}
	if len(got[0]) != 9 {
		t.Errorf("JSON has extra fields: %v", got[0])
	}
	var msgs []api.QuarantineMessage
	json.Unmarshal([]byte(r.stdout), &msgs)
	if msgs[0].ID != "q1" || !msgs[0].Received.Equal(wireMessage.Received) || msgs[1].From != "" || msgs[0].SHA256 != wireMessage.SHA256 {
		t.Errorf("round trip = %+v", msgs[0])
	}

	r = runQuarantine(t, &fakeAPI{}, "quarantine", "list", "-o", "json")
	if r.code != ExitOK || r.stdout != "[]\n" {
		t.Errorf("empty JSON list = %q", r.stdout)
	}
}

func TestQuarantineShow(t *testing.T) {
	for _, body := range [][]byte{wireBody, {}, []byte("Subject: x\n\nline\n")} {
		f := &fakeAPI{shown: body, shownSum: sha256hex(body)}
		r := runQuarantine(t, f, "quarantine", "show", "q1")
		if r.code != ExitOK || r.stderr != "" || f.gotID != "q1" {
			t.Fatalf("exit %d, stderr %q, id %q", r.code, r.stderr, f.gotID)
		}
		if !bytes.Equal([]byte(r.stdout), body) {
			t.Errorf("stdout = %q, want %q byte-exact", r.stdout, body)
		}
	}

	r := runQuarantine(t, &fakeAPI{shown: wireBody, shownSum: "abc"}, "quarantine", "show", "q1", "-o", "json")
	var sm shownMessage
	if err := json.Unmarshal([]byte(r.stdout), &sm); err != nil || r.code != ExitOK {
		t.Fatalf("json: exit %d, %v: %q", r.code, err, r.stdout)
	}
	if sm.ID != "q1" || sm.SHA256 != "abc" || sm.Size != len(wireBody) || sm.Message != nil || sm.MessageBase64 == "" {
		t.Errorf("binary message as JSON = %+v", sm)
	}
	r = runQuarantine(t, &fakeAPI{shown: []byte("Subject: hi\r\n\r\nx")}, "quarantine", "show", "q1", "-o", "json")
	if want := "{\n  \"id\": \"q1\",\n  \"size\": 16,\n  \"message\": \"Subject: hi\\r\\n\\r\\nx\"\n}\n"; r.stdout != want {
		t.Errorf("text message as JSON = %q, want %q", r.stdout, want)
	}
}

func TestQuarantineDeleteRelease(t *testing.T) {
	for _, tt := range []struct {
		cmd, call, want string
	}{
		{"delete", "quarantine-delete", "q1 deleted\n"},
		{"release", "quarantine-release", "q1 released\n"},
	} {
		m := wireMessage
		f := &fakeAPI{qmsg: &m}
		r := runQuarantine(t, f, "quarantine", tt.cmd, "q1")
		if r.code != ExitOK || r.stdout != tt.want || r.stderr != "" || f.gotID != "q1" ||
			strings.Join(f.calls, ",") != tt.call {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, calls %v", tt.cmd, r.code, r.stdout, r.stderr, f.calls)
		}
		r = runQuarantine(t, &fakeAPI{qmsg: &m}, "quarantine", tt.cmd, "q1", "-o", "json")
		var got api.QuarantineMessage
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.ID != "q1" {
			t.Errorf("%s -o json: %v %q", tt.cmd, err, r.stdout)
		}
	}
}

func TestQuarantineErrors(t *testing.T) {
	notFound := client.NewAPIError(404, api.Error{Code: api.CodeNotFound, Message: "no message q9"})
	for _, args := range [][]string{
		{"quarantine", "show", "q9"},
		{"quarantine", "delete", "q9"},
		{"quarantine", "release", "q9"},
	} {
		r := runQuarantine(t, &fakeAPI{err: notFound}, args...)
		want := "pmgcm: no message q9\nlist the messages and their IDs with 'pmgcm quarantine list'\n"
		if r.code != ExitError || r.stdout != "" || r.stderr != want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	down := errors.New("cannot reach pmgclusterd")
	r := runQuarantine(t, &fakeAPI{err: down}, "quarantine", "list")
	if r.code != ExitError || r.stderr != "pmgcm: cannot reach pmgclusterd\n" {
		t.Errorf("list: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestQuarantineUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"quarantine", "frobnicate"},
		{"quarantine", "list", "extra"},
		{"quarantine", "list", "--state", "spam"},
		{"quarantine", "list", "-o", "xml"},
		{"quarantine", "show"},
		{"quarantine", "show", ""},
		{"quarantine", "show", "a b"},
		{"quarantine", "show", "a", "b"},
		{"quarantine", "delete"},
		{"quarantine", "delete", "line\nbreak"},
		{"quarantine", "release"},
		{"quarantine", "release", "a", "b"},
	} {
		f := &fakeAPI{}
		r := runQuarantine(t, f, args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
}

func TestQuarantineHelp(t *testing.T) {
	r := runQuarantine(t, &fakeAPI{}, "quarantine", "--help")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "quarantine_help.golden", r.stdout)
	for _, want := range []string{"synchronized to all cluster nodes", "replicated to\nevery other node"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	r = runQuarantine(t, &fakeAPI{}, "quarantine")
	if r.code != ExitOK || !strings.Contains(r.stdout, "release") {
		t.Errorf("bare quarantine: exit %d, %q", r.code, r.stdout)
	}
}

func TestCut(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven ch…"},
		{"héllo wörld ünïcode", 8, "héllo w…"},
		{"word    spaces", 6, "word…"},
	} {
		if got := cut(tt.in, tt.n); got != tt.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// TestRunAgainstSocketQuarantine runs the quarantine commands through the real client and
// socket.
func TestRunAgainstSocketQuarantine(t *testing.T) {
	path := clienttest.Serve(t, &clienttest.Daemon{})
	received := wireMessage.Received.Local().Format(time.RFC3339)
	for _, tt := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"quarantine", "list"}, 0,
			"ID  RECEIVED" + strings.Repeat(" ", len(received)-6) + "FROM               TO                                 SIZE  STATE        SUBJECT\n" +
				"q1  " + received + "  alice@example.net  bob@example.com,carol@example.com  " +
				fmt.Sprintf("%-4d  quarantined  café\n", len(wireBody)), ""},
		{[]string{"quarantine", "list", "--from", "nobody", "-o", "json"}, 0, "[]\n", ""},
		{[]string{"quarantine", "show", "q1"}, 0, string(wireBody), ""},
		{[]string{"quarantine", "show", "corrupt"}, 1, "", "pmgcm: message corrupt arrived corrupt: its SHA-256 is " +
			sha256hex(wireBody) + ", the daemon stated " + strings.Repeat("0", 64) + "\n"},
		{[]string{"quarantine", "delete", "q1"}, 0, "q1 deleted\n", ""},
		{[]string{"quarantine", "release", "q1"}, 0, "q1 released\n", ""},
		{[]string{"quarantine", "release", "q9"}, 1, "",
			"pmgcm: no message q9\nlist the messages and their IDs with 'pmgcm quarantine list'\n"},
	} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"--socket", path}, tt.args...), nil, &out, &errb)
		if code != tt.code || out.String() != tt.out || errb.String() != tt.errs {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errb.String())
		}
	}
}
