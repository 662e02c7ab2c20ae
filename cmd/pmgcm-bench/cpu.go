package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/pmgcm/pmgcm/internal/proc"
)

// cpuMeter measures the CPU time (user + system) that the daemons of the cluster and the
// bench itself spend during a workload. CPU-seconds per operation stay meaningful on a
// loaded machine, where operations per second do not.
type cpuMeter struct {
	pids   []int
	daemon []time.Duration // per pid at start
	self   time.Duration
}

// procCPU is the utime+stime of pid; 0 if it cannot be read.
func procCPU(pid int) time.Duration {
	d, err := proc.CPUTime(pid)
	if err != nil {
		return 0
	}
	return d
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU starts measuring the running members of c and the bench.
func (c *cluster) startCPU() *cpuMeter {
	m := &cpuMeter{self: selfCPU()}
	for _, n := range c.members() {
		if p := n.process(); p != nil && !p.Exited() {
			m.pids = append(m.pids, p.Pid())
			m.daemon = append(m.daemon, procCPU(p.Pid()))
		}
	}
	return m
}

// fields are the CPU microseconds per operation of the daemons together and of the bench
// (the client side), for ops operations since startCPU.
func (m *cpuMeter) fields(ops int) []kv {
	if ops == 0 {
		return nil
	}
	var d time.Duration
	for i, pid := range m.pids {
		d += procCPU(pid) - m.daemon[i]
	}
	self := selfCPU() - m.self
	us := func(x time.Duration) string { return fmt.Sprintf("%.0f", float64(x.Microseconds())/float64(ops)) }
	return []kv{{"daemons_cpu_us_per_op", us(d)}, {"client_cpu_us_per_op", us(self)}, {"cpu_us_per_op", us(d + self)}}
}
