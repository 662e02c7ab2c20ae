package mailstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Compaction
//
// Retention (Purge) removes messages but keeps a tombstone and every event of each, so
// that a node that has not applied them yet still gets every origin's events in
// sequence. Compact drops what no node needs any more: for each origin, the longest
// run of its oldest events that concern only purged messages. It then keeps a floor per
// origin: the events at or below it are gone here. A peer asking for events from below
// a floor is told to skip to it (EventsFrom's floors, SkipTo): all it would have learnt
// is about messages past retention, which it purges by the same rule. The tombstones of
// messages whose "new" event is below its origin's floor go too, and a late state event
// for such a message is ignored: its "new" event is below every cursor, so nothing
// brings the message back.

// bktFloors maps origin(8) -> seq(8): the events of origin at or below seq are
// compacted away on this node.
var bktFloors = []byte("floors")

// compactBatch bounds the events one Compact transaction drops.
var compactBatch = 10000 // a variable for tests

// floorOf returns origin's compaction floor (0: nothing compacted).
func floorOf(tx *bolt.Tx, origin uint64) uint64 {
	if v := tx.Bucket(bktFloors).Get(u64(origin)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// compacted reports whether message id's "new" event is at or below its origin's
// floor: the message is past retention and its record is gone (or about to go).
func compacted(tx *bolt.Tx, id string) bool {
	o, q, err := ParseID(id)
	return err == nil && q <= floorOf(tx, o)
}

// Floors returns the compaction floors: origin -> the highest sequence number of the
// events dropped here. Origins with none are absent.
func (s *Store) Floors() Cursors {
	out := Cursors{}
	_ = s.view(func(tx *bolt.Tx) error {
		out = floors(tx)
		return nil
	})
	return out
}

func floors(tx *bolt.Tx) Cursors {
	out := Cursors{}
	_ = tx.Bucket(bktFloors).ForEach(func(k, v []byte) error {
		out[binary.BigEndian.Uint64(k)] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out
}

// Compact drops, for each origin, its oldest events as long as they concern only purged
// messages, with the tombstones of the messages they created. It returns how many
// events it dropped. Call it after Purge.
func (s *Store) Compact() (int, error) {
	total := 0
	for {
		n, err := s.compactOnce()
		total += n
		if err != nil {
			return total, fmt.Errorf("mailstore: compact: %w", err)
		}
		if n < compactBatch {
			return total, nil
		}
	}
}

// compactOnce drops up to compactBatch events in one transaction.
func (s *Store) compactOnce() (int, error) {
	dropped := 0
	err := s.update(func(tx *bolt.Tx) error {
		dropped = 0
		var origins []uint64
		_ = tx.Bucket(bktCursors).ForEach(func(k, _ []byte) error {
			origins = append(origins, binary.BigEndian.Uint64(k))
			return nil
		})
		for _, o := range origins {
			if dropped >= compactBatch {
				break
			}
			n, err := compactOrigin(tx, o, compactBatch-dropped)
			if err != nil {
				return err
			}
			dropped += n
		}
		return nil
	})
	return dropped, err
}

// compactOrigin drops up to max of origin's oldest events while they concern purged
// messages only, and raises its floor past them.
func compactOrigin(tx *bolt.Tx, origin uint64, max int) (int, error) {
	return dropOldest(tx, origin, max, func(ev *Event) (bool, error) { return purgedMessage(tx, ev.MsgID) })
}

// dropOldest drops origin's events from just above its floor on, while take accepts
// them and at most max (0: no bound), with the tombstones of the messages they created,
// and raises the floor to the last one dropped. It returns how many it dropped.
func dropOldest(tx *bolt.Tx, origin uint64, max int, take func(*Event) (bool, error)) (int, error) {
	prefix := u64(origin)
	var (
		keys    [][]byte
		created []string // messages whose "new" event goes
		last    uint64
	)
	c := tx.Bucket(bktEvents).Cursor()
	for k, v := c.Seek(eventKey(origin, floorOf(tx, origin)+1)); k != nil && bytes.HasPrefix(k, prefix) && (max <= 0 || len(keys) < max); k, v = c.Next() {
		var ev Event
		if err := DecodeEventJSON(v, &ev); err != nil {
			return 0, fmt.Errorf("decode event: %w", err)
		}
		if ok, err := take(&ev); err != nil || !ok {
			if err != nil {
				return 0, err
			}
			break
		}
		keys = append(keys, append([]byte(nil), k...))
		if ev.Kind == KindNew {
			created = append(created, ev.MsgID)
		}
		last = ev.Seq
	}
	if len(keys) == 0 {
		return 0, nil
	}
	for _, k := range keys { // not while iterating: bbolt's cursor would skip entries
		if err := tx.Bucket(bktEvents).Delete(k); err != nil {
			return 0, err
		}
	}
	for _, id := range created {
		// A message still live here (not purged yet on this node) stays until its own
		// retention; Purge then leaves no tombstone, since it is below the floor.
		r, err := getRecord(tx, id)
		if err != nil {
			return 0, err
		}
		if r != nil && r.Purged {
			if err := tx.Bucket(bktMeta).Delete([]byte(id)); err != nil {
				return 0, err
			}
		}
	}
	return len(keys), tx.Bucket(bktFloors).Put(prefix, u64(last))
}

// purgedMessage reports whether message id is past retention here: a tombstone, or
// already compacted. A message not here at all (a state event that came before its
// message) is not.
func purgedMessage(tx *bolt.Tx, id string) (bool, error) {
	r, err := getRecord(tx, id)
	if err != nil || r != nil {
		return r != nil && r.Purged, err
	}
	return compacted(tx, id), nil
}

// SkipTo raises this node's cursors to a peer's floors: the events below them are
// compacted there, and concerned only messages past retention. This node drops its own
// events below the floors (it cannot serve them in sequence any more), the tombstones
// of the messages they created, and the states it holds for messages that never came.
// Messages it still holds below a floor stay until its own retention purges them.
func (s *Store) SkipTo(peerFloors Cursors) error {
	changed := false
	err := s.update(func(tx *bolt.Tx) error {
		changed = false
		for o, f := range peerFloors {
			if f <= floorOf(tx, o) || f <= cursor(tx, o) {
				continue // nothing to skip: this node has every event up to f
			}
			if err := skipOrigin(tx, o, f); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
		pending := tx.Bucket(bktPending)
		var stale [][]byte
		_ = pending.ForEach(func(k, _ []byte) error {
			if compacted(tx, string(k)) {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range stale {
			if err := pending.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mailstore: skip to floors: %w", err)
	}
	if changed {
		s.notify()
	}
	return nil
}

// skipOrigin raises origin's floor and cursor, which is below it, to f.
func skipOrigin(tx *bolt.Tx, origin, f uint64) error {
	if _, err := dropOldest(tx, origin, 0, func(ev *Event) (bool, error) { return ev.Seq <= f, nil }); err != nil {
		return err
	}
	prefix := u64(origin)
	if err := tx.Bucket(bktFloors).Put(prefix, u64(f)); err != nil {
		return err
	}
	return tx.Bucket(bktCursors).Put(prefix, u64(f))
}
