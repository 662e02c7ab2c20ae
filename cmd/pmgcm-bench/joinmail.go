package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/proc"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// joinMail (issue 16) fills the cluster with --join-mail-messages quarantined messages
// of --mail-size bytes over SMTP, waits until every member holds all of them, then joins
// a fresh node (one not yet a member: node4, or node5 after the join workload) and times
// it from the join request until its own status shows it in state A holding every
// message with no mail backlog. It also reports the joined node's CPU seconds over that
// time (utime+stime of /proc/PID/stat), a load-independent figure.
func (b *bencher) joinMail(ctx context.Context) error {
	if !b.smtp {
		fmt.Println(line("join_mail", kv{"skipped", "pmgclusterd has no --smtp-port"}))
		return nil
	}
	var fresh *node
	for _, n := range b.c.nodes[3:] {
		if n.cid == 0 && !n.running() {
			fresh = n
			break
		}
	}
	if fresh == nil {
		return errors.New("no fresh node left to join")
	}
	members := b.c.members()
	if err := setRelayDomain(ctx, members); err != nil {
		return err
	}
	st, err := members[0].client.Status(ctx)
	if err != nil {
		return err
	}
	var before int64
	if r := localRowOf(st); r != nil && r.Mail != nil {
		before = r.Mail.Messages
	}

	total := b.o.joinMailMsgs
	t0 := time.Now()
	accepted, sendErr := fillMail(ctx, members, total, b.o.mailSize, max(b.o.mailConns, 2*len(members)))
	fillTime := time.Since(t0)
	want := before + int64(accepted)
	logf("join_mail: %d of %d messages of %d bytes accepted in %s (%s msgs/s)", accepted, total, b.o.mailSize,
		fillTime.Round(time.Millisecond), rate(accepted, fillTime))
	for _, n := range members {
		if err := waitHoldsMail(ctx, n, want, 300*time.Second); err != nil {
			return err
		}
	}
	settled := time.Since(t0)

	if err := fresh.start(ctx); err != nil {
		return err
	}
	pid := fresh.process().Pid()
	cpu0, _ := procCPUSeconds(pid)
	start := time.Now()
	if err := b.c.join(ctx, fresh); err != nil {
		return err
	}
	admitted := time.Since(start)
	var last string
	err = testutil.WaitEvery(ctx, fresh.name+" in state A with every message", 300*time.Second, 10*time.Millisecond, func() error {
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := fresh.client.Status(octx)
		if err != nil {
			return err
		}
		r := localRowOf(st)
		if r == nil {
			return errors.New("no local row")
		}
		last = fmt.Sprintf("state %s mail %+v", r.State, r.Mail)
		if r.State != api.StateActive || r.Mail == nil || r.Mail.Messages < want ||
			r.Mail.BacklogMessages > 0 || r.Mail.BacklogBytes > 0 {
			return errors.New(last)
		}
		return nil
	})
	active := time.Since(start)
	cpu1, cerr := procCPUSeconds(pid)
	errs := sendErr
	fields := []kv{{"messages", accepted}, {"msg_bytes", b.o.mailSize}, {"fill_s", fmt.Sprintf("%.1f", fillTime.Seconds())},
		{"fill_msgs_per_s", rate(accepted, fillTime)}, {"settled_s", fmt.Sprintf("%.1f", settled.Seconds())},
		{"admitted_ms", ms(admitted)}, {"active_ms", ms(active)}, {"p50_ms", ms(active)},
		{"msgs_per_s", rate(int(want), active)}}
	if cerr == nil {
		fields = append(fields, kv{"joined_cpu_s", fmt.Sprintf("%.2f", cpu1-cpu0)})
	}
	if err != nil {
		errs++
		fields = append(fields, kv{"error", err.Error()})
		logf("join_mail: last status of %s: %s", fresh.name, last)
	}
	fields = append(fields, kv{"errors", errs})
	fmt.Println(line("join_mail", fields...))
	if err != nil {
		return err
	}
	return b.c.waitActive(ctx, b.c.members(), 60*time.Second)
}

// setRelayDomain sets mail/relay_domains and waits until every one of members reads it.
func setRelayDomain(ctx context.Context, members []*node) error {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	_, err := client(members[0]).ConfigSet(octx, "mail/relay_domains", []byte(relayDomain), apiclient.WriteOptions{})
	cancel()
	if err != nil {
		return fmt.Errorf("set mail/relay_domains: %w", err)
	}
	for _, n := range members {
		cl := client(n)
		if err := testutil.WaitEvery(ctx, n.name+" has mail/relay_domains", 10*time.Second, 10*time.Millisecond, func() error {
			v, err := cl.ConfigGet(ctx, "mail/relay_domains", apiclient.ReadOptions{Stale: true})
			if err != nil {
				return err
			}
			if string(v.Value) != relayDomain {
				return fmt.Errorf("value %q", v.Value)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// fillMail sends total messages of about size bytes over conns SMTP connections spread
// over members, and returns how many were accepted and how many failed.
func fillMail(ctx context.Context, members []*node, total, size, conns int) (accepted, failed int) {
	body := mailBody(size)
	var next, ok, bad atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		n := members[c%len(members)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendOver(ctx, "join_mail", n, body, func() (int, bool) {
				i := int(next.Add(1)) - 1
				return i, i < total
			}, func(_ int, _ string, err error) {
				if err != nil {
					bad.Add(1)
				} else {
					ok.Add(1)
				}
			})
		}()
	}
	wg.Wait()
	return int(ok.Load()), int(bad.Load())
}

// waitHoldsMail waits until n's own status shows at least want messages and no backlog.
func waitHoldsMail(ctx context.Context, n *node, want int64, timeout time.Duration) error {
	return testutil.WaitEvery(ctx, n.name+" holds every message", timeout, 100*time.Millisecond, func() error {
		return holdsMail(ctx, n, want)
	})
}

// localRowOf is the answering node's own row of st, or nil.
func localRowOf(st *api.Status) *api.Node {
	for i := range st.Nodes {
		if st.Nodes[i].Local {
			return &st.Nodes[i]
		}
	}
	return nil
}

// procCPUSeconds is the user+system CPU time of process pid.
func procCPUSeconds(pid int) (float64, error) {
	d, err := proc.CPUTime(pid)
	return d.Seconds(), err
}
