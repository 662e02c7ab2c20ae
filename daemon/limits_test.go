package daemon

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/connlimit"
)

func TestConfigValidateLimits(t *testing.T) {
	ok := DefaultConfig()
	ok.DataDir, ok.IP, ok.Name = "/tmp/x", "127.0.0.1", "node1"
	ok.SMTPMaxConnections, ok.SMTPMaxConnectionsPerIP = 20, 20
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"negative cap":     {func(c *Config) { c.SMTPMaxConnections = -1 }, "must not be negative"},
		"per-ip over all":  {func(c *Config) { c.SMTPMaxConnectionsPerIP = 21 }, "--smtp-max-connections-per-ip 21 is more than --smtp-max-connections 20"},
		"no idle timeout":  {func(c *Config) { c.SMTPIdleTimeout = 0 }, "--smtp-idle-timeout"},
		"negative session": {func(c *Config) { c.SMTPSessionTimeout = -time.Second }, "--smtp-session-timeout"},
	} {
		c := ok
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// TestRefuseHTTP: a connection over a cap gets a well-formed 503 with an api.Error that
// says which listener and why.
func TestRefuseHTTP(t *testing.T) {
	for reason, want := range map[error]string{
		connlimit.ErrTotal:     "too many connections to the join channel, try again later",
		connlimit.ErrPerSource: "too many connections to the join channel from your address, try again later",
	} {
		server, client := net.Pipe()
		go func() {
			refuseHTTP("join channel")(server, reason)
			server.Close()
		}()
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		client.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || e.Code != api.CodeUnavailable || e.Message != want {
			t.Errorf("%v: %d %+v, want 503 %q", reason, resp.StatusCode, e, want)
		}
	}
}
