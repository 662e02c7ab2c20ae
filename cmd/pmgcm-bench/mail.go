package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

const relayDomain = "bench.example"

// mail sends messages over SMTP round-robin over the nodes and measures the accepted
// rate, and the replication lag: the time from the 250 until every node lists the
// message in its quarantine (each node's list polled through the control API).
func (b *bencher) mail(ctx context.Context) error {
	if !b.smtp {
		fmt.Println(line("mail", kv{"skipped", "pmgclusterd has no --smtp-port"}))
		return nil
	}
	members := b.c.members()
	// The relay domain must be applied on every node before its intake accepts.
	if err := setRelayDomain(ctx, members); err != nil {
		return err
	}
	before, err := client(members[0]).QuarantineList(ctx, "", "", "")
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, m := range before {
		known[m.ID] = true
	}

	total := b.o.mailMsgs
	body := mailBody(b.o.mailSize)
	var (
		mu      sync.Mutex
		ackAt   = map[string]time.Time{}
		seen    = make([]map[string]time.Time, len(members))
		sendErr int
		lastAck time.Time
	)
	for i := range seen {
		seen[i] = map[string]time.Time{}
	}
	// One queue per node: message i goes to node i mod len(members).
	queues := make([]chan int, len(members))
	for i := range queues {
		queues[i] = make(chan int, total)
	}
	for i := 0; i < total; i++ {
		queues[i%len(members)] <- i
	}
	for _, q := range queues {
		close(q)
	}

	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var pwg sync.WaitGroup
	for i, n := range members {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			cl := client(n)
			for pctx.Err() == nil {
				octx, cancel := context.WithTimeout(pctx, opTimeout)
				list, err := cl.QuarantineList(octx, "", "", "")
				cancel()
				now := time.Now()
				if err == nil {
					mu.Lock()
					for _, m := range list {
						if _, ok := seen[i][m.ID]; !ok && !known[m.ID] {
							seen[i][m.ID] = now
						}
					}
					mu.Unlock()
				}
				select {
				case <-pctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}

	start := time.Now()
	var swg sync.WaitGroup
	conns := max(b.o.mailConns, len(members))
	for c := 0; c < conns; c++ {
		n := members[c%len(members)]
		q := queues[c%len(members)]
		swg.Add(1)
		go func() {
			defer swg.Done()
			sendOver(ctx, "mail", n, body, func() (int, bool) {
				i, ok := <-q
				return i, ok
			}, func(i int, id string, err error) {
				now := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					sendErr++
					return
				}
				ackAt[id] = now
				lastAck = now
			})
		}()
	}
	swg.Wait()
	sendTime := time.Since(start)
	accepted := len(ackAt)

	// Wait until every node lists every accepted message.
	err = testutil.WaitEvery(ctx, "every node lists every message", 120*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := range members {
			missing := 0
			for id := range ackAt {
				if _, ok := seen[i][id]; !ok {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%s misses %d messages", members[i].name, missing)
			}
		}
		return nil
	})
	pcancel()
	pwg.Wait()
	listedAll := time.Since(lastAck)
	// Bodies: the status of each node says how many messages it holds and what it still
	// has to fetch; wait until no node has a backlog.
	bodiesErr := testutil.WaitEvery(ctx, "every node holds every body", 120*time.Second, 20*time.Millisecond, func() error {
		for _, n := range members {
			if err := holdsMail(ctx, n, int64(accepted+len(known))); err != nil {
				return err
			}
		}
		return nil
	})
	allHeld := time.Since(lastAck)

	var lag latencies
	mu.Lock()
	for id, at := range ackAt {
		var last time.Time
		ok := true
		for i := range members {
			t, has := seen[i][id]
			if !has {
				ok = false
				break
			}
			if t.After(last) {
				last = t
			}
		}
		if !ok {
			lag.fail()
			continue
		}
		lag.add(max(last.Sub(at), 0))
	}
	mu.Unlock()
	ls, lerrs := lag.snapshot()
	fields := []kv{{"messages", total}, {"msg_bytes", len(body)}, {"conns", conns}, {"nodes", len(members)},
		{"accepted", accepted}, {"msgs_per_s", rate(accepted, sendTime)}, {"ops_per_s", rate(accepted, sendTime)},
		{"lag_p50_ms", ms(percentile(ls, 50))}, {"lag_p99_ms", ms(percentile(ls, 99))}, {"lag_max_ms", ms(percentile(ls, 100))},
		{"p50_ms", ms(percentile(ls, 50))}, {"p99_ms", ms(percentile(ls, 99))},
		{"listed_all_after_last_ms", ms(listedAll)}, {"bodies_all_after_last_ms", ms(allHeld)},
		{"errors", sendErr + lerrs}}
	if e := errors.Join(err, bodiesErr); e != nil {
		fields = append(fields, kv{"error", e.Error()})
	}
	fmt.Println(line("mail", fields...))
	return nil
}

// sendOver sends the messages that take gives (their numbers; false: no more) to n over
// one SMTP connection, dialled again after a failure, and tells done of each one: the
// queue ID of its 250, or the error. what names the workload in the log.
func sendOver(ctx context.Context, what string, n *node, body []byte, take func() (int, bool), done func(i int, id string, err error)) {
	addr := net.JoinHostPort(n.ip, strconv.Itoa(n.smtpPort))
	var sc *smtp.Client
	defer func() {
		if sc != nil {
			_ = sc.Quit()
		}
	}()
	for ctx.Err() == nil {
		i, ok := take()
		if !ok {
			return
		}
		if sc == nil {
			var err error
			if sc, err = dialSMTP(addr); err != nil {
				logf("%s: %v", what, err)
				done(i, "", err)
				continue
			}
		}
		id, err := sendOne(sc, i, body)
		if err != nil {
			logf("%s: message %d to %s: %v", what, i, n.name, err)
			_ = sc.Close()
			sc = nil
		}
		done(i, id, err)
	}
}

// holdsMail checks once that n's own status shows at least want messages and no backlog.
func holdsMail(ctx context.Context, n *node, want int64) error {
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := n.client.Status(octx)
	if err != nil {
		return err
	}
	r := localRowOf(st)
	if r == nil || r.Mail == nil || r.Mail.Messages < want || r.Mail.BacklogMessages > 0 || r.Mail.BacklogBytes > 0 {
		return fmt.Errorf("%s: mail %+v, want %d messages and no backlog", n.name, r, want)
	}
	return nil
}

func dialSMTP(addr string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	sc, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := sc.Hello("bench.local"); err != nil {
		_ = sc.Close()
		return nil, err
	}
	return sc, nil
}

// sendOne sends message i and returns the id the server named in its 250 ("queued as").
// DATA is driven on the textproto connection because smtp.Client drops that reply.
func sendOne(sc *smtp.Client, i int, body []byte) (string, error) {
	if err := sc.Mail(fmt.Sprintf("sender%d@sender.example", i)); err != nil {
		return "", err
	}
	if err := sc.Rcpt(fmt.Sprintf("user%d@%s", i%50, relayDomain)); err != nil {
		return "", err
	}
	t := sc.Text
	id, err := t.Cmd("DATA")
	if err != nil {
		return "", err
	}
	t.StartResponse(id)
	_, _, err = t.ReadResponse(354)
	t.EndResponse(id)
	if err != nil {
		return "", err
	}
	w := t.DotWriter()
	fmt.Fprintf(w, "From: <sender%d@sender.example>\r\nTo: <user%d@%s>\r\nSubject: bench %d\r\nMessage-ID: <bench-%d@bench.local>\r\n\r\n",
		i, i%50, relayDomain, i, i)
	if _, err := w.Write(body); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	_, msg, err := t.ReadResponse(250)
	if err != nil {
		return "", err
	}
	_, qid, ok := strings.Cut(msg, "queued as ")
	if !ok {
		return "", fmt.Errorf("250 without an id: %q", msg)
	}
	return strings.TrimSpace(qid), nil
}

// mailBody returns a body of about size bytes: 76-character lines of text.
func mailBody(size int) []byte {
	var b bytes.Buffer
	lineText := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 3)[:76]
	for b.Len()+78 <= size {
		b.WriteString(lineText)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
