package netfault

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Delay without netem: an iptables-legacy rule in the namespace sends every outgoing
// packet to an NFQUEUE (the kernel has the xt NFQUEUE target but neither the netem qdisc
// nor nft's queue statement), and a netlink socket opened inside the namespace by this
// process gives each queued packet its verdict (accept) after the delay. With jitter
// packets may overtake each other, as with netem. --queue-bypass makes the rule a no-op
// when no reader is bound, so a dead test never blackholes the namespace.

// netlink and nfnetlink_queue constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1
	nfAccept        = 1
)

// delayQueue is the reader of one namespace's delay queue.
type delayQueue struct {
	fd  int
	num uint16

	mu     sync.Mutex
	base   time.Duration
	jitter time.Duration
	rng    *rand.Rand

	done chan struct{}
	wg   sync.WaitGroup
	// fdMu keeps the socket open while a verdict is being sent: close takes it
	// exclusively, so a late timer never writes to a reused descriptor.
	fdMu   sync.RWMutex
	closed bool
}

// openDelayQueue binds queue num inside the namespace at nsPath. The socket is made on a
// thread moved into the namespace and moved back, so it belongs to the namespace while
// the rest of the process stays where it is.
func openDelayQueue(nsPath string, num uint16) (*delayQueue, error) {
	fd, err := socketInNetns(nsPath)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// The reader wakes up this often to see whether it should stop.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	q := &delayQueue{fd: fd, num: num, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(num))), done: make(chan struct{})}
	cmd := make([]byte, 4)
	cmd[0] = nfqnlCfgCmdBind
	binary.BigEndian.PutUint16(cmd[2:], unix.AF_INET)
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyMeta
	maxLen := binary.BigEndian.AppendUint32(nil, 16384)
	if err := q.send(nfqnlMsgConfig, unix.NLM_F_ACK, attr(nfqaCfgCmd, cmd)); err != nil {
		q.closeFD()
		return nil, fmt.Errorf("netfault: bind nfqueue %d: %w", num, err)
	}
	if err := q.ack(); err != nil {
		q.closeFD()
		return nil, fmt.Errorf("netfault: bind nfqueue %d: %w", num, err)
	}
	if err := q.send(nfqnlMsgConfig, 0, append(attr(nfqaCfgParams, params), attr(nfqaCfgQueueMax, maxLen)...)); err != nil {
		q.closeFD()
		return nil, fmt.Errorf("netfault: configure nfqueue %d: %w", num, err)
	}
	q.wg.Add(1)
	go q.read()
	return q, nil
}

func socketInNetns(nsPath string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked (and so ends with this goroutine) if moving it
		// back fails: it must not run other goroutines in the wrong namespace.
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		fd, serr := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if serr == nil {
			serr = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			if fd >= 0 {
				_ = unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, serr}
	}()
	r := <-ch
	return r.fd, r.err
}

// attr encodes one netlink attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b := make([]byte, (l+3)&^3)
	binary.LittleEndian.PutUint16(b, uint16(l))
	binary.LittleEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

// send sends one nfnetlink_queue message with the given attributes.
func (q *delayQueue) send(msg uint16, flags uint16, attrs []byte) error {
	b := make([]byte, 16+4+len(attrs))
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	binary.LittleEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|msg)
	binary.LittleEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|flags)
	b[16] = unix.AF_UNSPEC
	b[17] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:], q.num)
	copy(b[20:], attrs)
	return unix.Sendto(q.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// ack reads the kernel's answer to a request sent with NLM_F_ACK.
func (q *delayQueue) ack() error {
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(q.fd, buf, 0)
	if err != nil {
		return err
	}
	if n < 20 || binary.LittleEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return errors.New("no netlink acknowledgement")
	}
	if code := int32(binary.LittleEndian.Uint32(buf[16:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// set changes the delay of packets queued from now on.
func (q *delayQueue) set(base, jitter time.Duration) {
	q.mu.Lock()
	q.base, q.jitter = base, jitter
	q.mu.Unlock()
}

func (q *delayQueue) delay() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.jitter <= 0 {
		return q.base
	}
	return max(0, q.base-q.jitter+time.Duration(q.rng.Int64N(int64(2*q.jitter)+1)))
}

// read takes the queued packets and accepts each after its delay.
func (q *delayQueue) read() {
	defer q.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			select {
			case <-q.done:
				return
			default:
			}
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // the kernel dropped some: a loss, then go on
			}
			return
		}
		for b := buf[:n]; len(b) >= 16; {
			l := int(binary.LittleEndian.Uint32(b))
			if l < 16 || l > len(b) {
				break
			}
			if typ := binary.LittleEndian.Uint16(b[4:]); typ == nfnlSubsysQueue<<8|nfqnlMsgPacket && l >= 20 {
				if id, ok := packetID(b[20:l]); ok {
					d := q.delay()
					if d <= 0 {
						q.accept(id)
					} else {
						time.AfterFunc(d, func() { q.accept(id) })
					}
				}
			}
			b = b[(l+3)&^3:]
		}
	}
}

// packetID finds NFQA_PACKET_HDR's packet id in a packet message's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.LittleEndian.Uint16(attrs))
		typ := binary.LittleEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[(l+3)&^3:]
	}
	return 0, false
}

func (q *delayQueue) accept(id uint32) {
	q.fdMu.RLock()
	defer q.fdMu.RUnlock()
	if q.closed {
		return
	}
	v := make([]byte, 8)
	binary.BigEndian.PutUint32(v, nfAccept)
	binary.BigEndian.PutUint32(v[4:], id)
	_ = q.send(nfqnlMsgVerdict, 0, attr(nfqaVerdictHdr, v))
}

func (q *delayQueue) closeFD() { _ = unix.Close(q.fd) }

// close stops the reader; packets still held are released by the kernel when the
// socket closes (with --queue-bypass the rule then passes packets straight on).
func (q *delayQueue) close() {
	close(q.done)
	q.wg.Wait() // the reader sees done within its receive timeout
	q.fdMu.Lock()
	q.closed = true
	q.closeFD()
	q.fdMu.Unlock()
}
