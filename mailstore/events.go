package mailstore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// validate checks an event received from a peer.
func (ev *Event) validate() error {
	if ev.Seq == 0 {
		return fmt.Errorf("%w: event %d/0", ErrInvalid, ev.Origin)
	}
	if o, _, err := ParseID(ev.MsgID); err != nil {
		return err
	} else if ev.Kind == KindNew && o != ev.Origin {
		return fmt.Errorf("%w: event %d/%d: message %s of another origin", ErrInvalid, ev.Origin, ev.Seq, ev.MsgID)
	}
	switch ev.Kind {
	case KindNew:
		m := ev.Msg
		if m == nil || m.ID != ev.MsgID || m.ID != MakeID(ev.Origin, ev.Seq) || m.Origin != ev.Origin || m.Seq != ev.Seq {
			return fmt.Errorf("%w: event %d/%d: bad message identity", ErrInvalid, ev.Origin, ev.Seq)
		}
		if b, err := hex.DecodeString(m.SHA256); err != nil || len(b) != 32 || m.Size < 0 {
			return fmt.Errorf("%w: event %d/%d: bad size or sha256", ErrInvalid, ev.Origin, ev.Seq)
		}
	case KindState:
		if stateRank(ev.State) == 0 {
			return fmt.Errorf("%w: event %d/%d: state %q", ErrInvalid, ev.Origin, ev.Seq, ev.State)
		}
	default:
		// An unknown kind comes from a newer version: refuse it rather than
		// skip it, so that its effect is not lost once this node is upgraded.
		return fmt.Errorf("%w: event %d/%d: kind %q", ErrInvalid, ev.Origin, ev.Seq, ev.Kind)
	}
	return nil
}

// ApplyEvent applies one event received from a peer; see ApplyEvents.
func (s *Store) ApplyEvent(ev Event) (needBody bool, err error) {
	ids, err := s.ApplyEvents([]Event{ev})
	return len(ids) > 0, err
}

// ApplyEvents applies events received from a peer, in order, in one
// transaction (shared with the other writes of the moment: group.go). An event at or below its origin's cursor is skipped
// (idempotent); one above cursor+1 stops the batch with ErrGap, an invalid one
// with ErrInvalid: the events before it stay applied. It returns the IDs of
// new messages whose body this node must now fetch.
func (s *Store) ApplyEvents(evs []Event) (needBody []string, err error) {
	if s.appliedAll(evs) {
		// Every event is here already (the same ones from a second peer: each node
		// serves the events of every origin it has): no batch, no commit.
		return nil, nil
	}
	var stop error
	var remove []string
	changed := false
	// In a batch with the Accepts and body commits of the moment (group.go): the
	// events of a peer share the commit of this node's own intake.
	req := &commitReq{}
	req.apply = func(tx *bolt.Tx) error {
		needBody, remove, stop, changed = nil, nil, nil, false
		defer func() { req.quiet = !changed }()
		for i := range evs {
			need, rm, applied, err := applyTx(tx, &evs[i])
			if errors.Is(err, ErrGap) || errors.Is(err, ErrInvalid) {
				stop = err
				break
			}
			if err != nil {
				return err
			}
			changed = changed || applied
			if need {
				needBody = append(needBody, evs[i].MsgID)
			}
			if rm {
				remove = append(remove, evs[i].MsgID)
			}
		}
		return nil
	}
	// No client waits on a peer's events: their batch may linger (group.go), unless
	// one is of this node's own origin (a peer giving back what a restore lost here).
	// That one takes a sequence number the intake journal must not give meanwhile,
	// and its turn holds intake off until the commit.
	req.linger = true
	local := s.opts.LocalCID()
	for i := range evs {
		if evs[i].Origin == local {
			req.linger = false
			done, terr := s.localTurn()
			if terr != nil {
				return nil, fmt.Errorf("mailstore: apply events: %w", terr)
			}
			defer done()
			break
		}
	}
	err = s.groupCommit(req)
	if err != nil {
		return nil, fmt.Errorf("mailstore: apply events: %w", err)
	}
	s.removeBodies(remove)
	return needBody, stop
}

// appliedAll reports whether every event of evs is valid and at or below its origin's
// cursor in the committed index (cursors only grow between Wipes and restores, so
// applyTx would skip them all).
func (s *Store) appliedAll(evs []Event) bool {
	all := len(evs) > 0
	_ = s.viewCommitted(func(tx *bolt.Tx) error {
		for i := range evs {
			if evs[i].validate() != nil || evs[i].Seq > cursor(tx, evs[i].Origin) {
				all = false
				return nil
			}
		}
		return nil
	})
	return all
}

// applyTx applies one event: need says a body must be fetched, rm that a
// body must be removed after commit, applied that the event was new.
func applyTx(tx *bolt.Tx, ev *Event) (need, rm, applied bool, err error) {
	if err := ev.validate(); err != nil {
		return false, false, false, err
	}
	cur := cursor(tx, ev.Origin)
	if ev.Seq <= cur {
		return false, false, false, nil
	}
	if ev.Seq != cur+1 {
		return false, false, false, fmt.Errorf("%w: origin %d: have %d, got %d", ErrGap, ev.Origin, cur, ev.Seq)
	}
	if err := putEvent(tx, *ev); err != nil {
		return false, false, false, err
	}
	old, err := getRecord(tx, ev.MsgID)
	if err != nil {
		return false, false, false, err
	}
	pending := tx.Bucket(bktPending)
	switch ev.Kind {
	case KindNew:
		if old != nil { // cannot happen with unique IDs; keep what we have
			return false, false, true, nil
		}
		nw := &record{Meta: *ev.Msg}
		nw.HaveBody = false
		nw.State = maxState(StateQuarantined, nw.State)
		if p := pending.Get([]byte(ev.MsgID)); p != nil {
			nw.State = maxState(nw.State, string(p))
			if err := pending.Delete([]byte(ev.MsgID)); err != nil {
				return false, false, false, err
			}
		}
		if h := horizon(tx); nw.Received.Before(h) {
			nw.Purged = true // already past retention here: tombstone only
		}
		return nw.counted(), false, true, putRecord(tx, nil, nw)
	default: // KindState
		if old == nil && compacted(tx, ev.MsgID) {
			return false, false, true, nil // past retention, compacted: nothing to keep
		}
		if old == nil {
			p := pending.Get([]byte(ev.MsgID))
			return false, false, true, pending.Put([]byte(ev.MsgID), []byte(maxState(string(p), ev.State)))
		}
		if old.Purged {
			return false, false, true, nil
		}
		nw := *old
		nw.State = maxState(old.State, ev.State)
		if nw.State == StateDeleted && old.HaveBody {
			nw.HaveBody, rm = false, true
		}
		return false, rm, true, putRecord(tx, old, &nw)
	}
}

// SetState is an operator's change of a message's state on this node: it
// applies the merge rule and records a "state" event of the local origin,
// which replication ships to every node. It returns the message in its new
// state. Setting a state at or below the current one changes nothing and
// records no event, except that releasing a deleted message is ErrDeleted.
func (s *Store) SetState(id, state string) (Meta, error) {
	if _, _, err := ParseID(id); err != nil {
		return Meta{}, err
	}
	if stateRank(state) == 0 {
		return Meta{}, fmt.Errorf("%w: state %q", ErrInvalid, state)
	}
	var out Meta
	rm, changed := false, false
	err := s.update(func(tx *bolt.Tx) error {
		old, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if old == nil || old.Purged {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		nw := *old
		nw.State = maxState(old.State, state)
		out = nw.Meta
		if nw.State == old.State {
			if old.State == StateDeleted && state != StateDeleted {
				return fmt.Errorf("%w: %s", ErrDeleted, id)
			}
			return nil
		}
		if nw.State == StateDeleted && old.HaveBody {
			nw.HaveBody, rm = false, true
		}
		out, changed = nw.Meta, true
		origin := s.opts.LocalCID()
		ev := Event{Origin: origin, Seq: cursor(tx, origin) + 1, Kind: KindState,
			MsgID: id, State: nw.State, At: s.opts.Now().UTC()}
		if err := putEvent(tx, ev); err != nil {
			return err
		}
		return putRecord(tx, old, &nw)
	})
	if err != nil {
		return Meta{}, err
	}
	if rm {
		s.removeBodies([]string{id})
	}
	if changed {
		s.notify()
	}
	return out, nil
}

// removeBodies deletes the body files (and partial files) of ids, whose
// records no longer claim a body.
func (s *Store) removeBodies(ids []string) {
	for _, id := range ids {
		p := s.BodyPath(id)
		_ = os.Remove(p)
		_ = os.Remove(p + ".part")
	}
}

// Heads returns the cursors: for every origin known here, the highest event
// sequence number applied.
func (s *Store) Heads() Cursors {
	return s.heads(s.view)
}

// heads is Heads through view (Store.view or Store.viewCommitted).
func (s *Store) heads(view func(func(*bolt.Tx) error) error) Cursors {
	out := Cursors{}
	_ = view(func(tx *bolt.Tx) error {
		out = headsTx(tx)
		return nil
	})
	return out
}

// headsTx reads the cursors in tx.
func headsTx(tx *bolt.Tx) Cursors {
	out := Cursors{}
	_ = tx.Bucket(bktCursors).ForEach(func(k, v []byte) error {
		out[binary.BigEndian.Uint64(k)] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out
}

// EventsSince returns up to limit events (all when limit <= 0) of every origin
// with a sequence number above c[origin], in per-origin sequence order,
// origins in ascending order. Events compacted here are skipped; see EventsFrom.
func (s *Store) EventsSince(c Cursors, limit int) ([]Event, error) {
	evs, _, err := s.EventsFrom(c, limit)
	return evs, err
}

// EventsFrom is EventsSince that also returns, for each origin whose cursor in c is
// below this node's compaction floor, that floor: the asker must skip to it (SkipTo)
// before it applies the events, which start above it.
func (s *Store) EventsFrom(c Cursors, limit int) (evs []Event, skip Cursors, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		evs, skip, err = eventsFromTx(tx, c, limit)
		return err
	})
	return evs, skip, err
}

// eventsFromTx is EventsFrom in tx.
func eventsFromTx(tx *bolt.Tx, c Cursors, limit int) ([]Event, Cursors, error) {
	var out []Event
	skip := Cursors{}
	heads := tx.Bucket(bktCursors)
	cur := tx.Bucket(bktEvents).Cursor()
	err := heads.ForEach(func(k, v []byte) error {
		origin, head := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)
		from := c[origin]
		if f := floorOf(tx, origin); from < f {
			skip[origin], from = f, f
		}
		if from >= head {
			return nil
		}
		for ek, ev := cur.Seek(eventKey(origin, from+1)); ek != nil && bytes.HasPrefix(ek, k); ek, ev = cur.Next() {
			if limit > 0 && len(out) >= limit {
				return nil
			}
			var e Event
			if err := DecodeEventJSON(ev, &e); err != nil {
				return fmt.Errorf("mailstore: decode event: %w", err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, skip, err
}
