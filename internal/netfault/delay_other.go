//go:build !linux

package netfault

import (
	"errors"
	"time"
)

type delayQueue struct{}

func openDelayQueue(string, uint16) (*delayQueue, error) {
	return nil, errors.New("netfault: delay needs Linux (NFQUEUE)")
}

func (*delayQueue) set(time.Duration, time.Duration) {}
func (*delayQueue) close()                           {}
