//go:build !linux

package transport

import (
	"errors"
	"net"
	"time"
)

var errNoRTOMin = errors.New("transport: no per-connection TCP retransmission timeout on this OS")

func setRTOMin(*net.TCPConn, time.Duration) error { return errNoRTOMin }

func rtoMin(*net.TCPConn) (time.Duration, error) { return 0, errNoRTOMin }
