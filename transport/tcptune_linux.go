package transport

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setRTOMin sets TCP_RTO_MIN_US (Linux 6.15+) on c.
func setRTOMin(c *net.TCPConn, d time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MIN_US, int(d/time.Microsecond))
	})
	if err != nil {
		return err
	}
	return serr
}

// rtoMin reads TCP_RTO_MIN_US of c back, for tests.
func rtoMin(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var gerr error
	err = rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MIN_US)
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Microsecond, gerr
}
