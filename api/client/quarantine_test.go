package client

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client/clienttest"
)

func TestClientWireQuarantine(t *testing.T) {
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()

	msgs, err := c.QuarantineList(ctx, "", "", "")
	if err != nil || len(msgs) != 1 || msgs[0].ID != "q1" || !msgs[0].Received.Equal(clienttest.QuarantineMessage.Received) ||
		strings.Join(msgs[0].To, ",") != "bob@example.com,carol@example.com" {
		t.Fatalf("QuarantineList = %+v, %v", msgs, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathQuarantine || r.RawQuery != "" || len(r.Body) != 0 {
		t.Errorf("list request = %+v", r)
	}
	msgs, err = c.QuarantineList(ctx, "alice", "@example.com", api.MailQuarantined)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("filtered QuarantineList = %+v, %v", msgs, err)
	}
	if r := d.Last(); r.RawQuery != "from=alice&state=quarantined&to=%40example.com" {
		t.Errorf("filtered list sent %q", r.RawQuery)
	}
	if msgs, err = c.QuarantineList(ctx, "nobody", "", ""); err != nil || msgs == nil || len(msgs) != 0 {
		t.Errorf("empty QuarantineList = %#v, %v", msgs, err)
	}

	body, sum, err := c.QuarantineShow(ctx, "q1")
	if err != nil || !bytes.Equal(body, clienttest.QuarantineBody) || sum != clienttest.QuarantineMessage.SHA256 {
		t.Fatalf("QuarantineShow = %q, %q, %v", body, sum, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathQuarantineShow || r.RawQuery != "id=q1" {
		t.Errorf("show request = %+v", r)
	}
	if body, sum, err = c.QuarantineShow(ctx, "nosum"); err != nil || !bytes.Equal(body, clienttest.QuarantineBody) || sum != "" {
		t.Errorf("QuarantineShow without a checksum = %q, %q, %v", body, sum, err)
	}
	if _, _, err = c.QuarantineShow(ctx, "corrupt"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("QuarantineShow of a corrupt copy: %v", err)
	}
	var ae *APIError
	if _, _, err = c.QuarantineShow(ctx, "q9"); !errors.As(err, &ae) || ae.Status != 404 || ae.Code != api.CodeNotFound {
		t.Errorf("QuarantineShow of an unknown id: %#v", err)
	}

	m, err := c.QuarantineDelete(ctx, "q1")
	if err != nil || m.ID != "q1" || m.State != api.MailDeleted {
		t.Fatalf("QuarantineDelete = %+v, %v", m, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathQuarantineDelete || r.RawQuery != "id=q1" || len(r.Body) != 0 {
		t.Errorf("delete request = %+v", r)
	}
	m, err = c.QuarantineRelease(ctx, "q1")
	if err != nil || m.ID != "q1" || m.State != api.MailReleased {
		t.Fatalf("QuarantineRelease = %+v, %v", m, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathQuarantineRelease || r.RawQuery != "id=q1" {
		t.Errorf("release request = %+v", r)
	}
	if _, err = c.QuarantineRelease(ctx, "a&b=c"); !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Errorf("QuarantineRelease of an unknown id: %#v", err)
	}
	if r := d.Last(); r.Query["id"][0] != "a&b=c" || len(r.Query) != 1 {
		t.Errorf("an id with query characters was sent as %q", r.RawQuery)
	}
}
