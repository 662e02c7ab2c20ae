package transport

import (
	"errors"
	"fmt"
	"net"
)

// ErrPartitioned is returned for traffic to or from a host cut off by Partition.
var ErrPartitioned = errors.New("partitioned (fault injection)")

// partition is the set of hosts (IP strings) this mux is cut off from.
type partition map[string]bool

// Partition cuts this node off from hosts (IP addresses): dials to them fail,
// connections from them are closed when accepted, and open connections with them fail on
// their next read or write, in both directions as far as this node is concerned.
// Partition(nil) heals. It is the fault-injection seam of the drills and the
// linearizability check; the daemon exposes it only when started for fault injection.
// Pinned dials (join channel) are not affected.
func (m *Mux) Partition(hosts []string) {
	p := partition{}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			p[ip.String()] = true
		}
	}
	m.partition.Store(&p)
	m.logger.Warn("fault injection: partition set", "hosts", hosts)
}

// partitioned reports whether traffic with host (an IP, or "ip:port") is cut off.
func (m *Mux) partitioned(host string) bool {
	p := m.partition.Load()
	if p == nil || len(*p) == 0 {
		return false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return (*p)[host]
}

// cutOff fails an I/O on c if its peer is partitioned away, closing the connection.
func (c *Conn) cutOff() error {
	if c.m == nil || !c.m.partitioned(c.peer) {
		return nil
	}
	_ = c.Conn.Close()
	return fmt.Errorf("transport: %s: %w", c.peer, ErrPartitioned)
}

// Read reads from the connection unless its peer has been partitioned away.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.cutOff(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Write writes to the connection unless its peer has been partitioned away.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.cutOff(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
