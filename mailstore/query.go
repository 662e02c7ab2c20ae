package mailstore

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Get returns the metadata of id; ErrNotFound when unknown or purged. A
// deleted message is returned, with State "deleted".
func (s *Store) Get(id string) (Meta, error) {
	return s.get(s.view, id)
}

// get is Get through view (Store.view or Store.viewCommitted).
func (s *Store) get(view func(func(*bolt.Tx) error) error, id string) (Meta, error) {
	if _, _, err := ParseID(id); err != nil {
		return Meta{}, err
	}
	var out Meta
	err := view(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if r == nil || r.Purged {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		out = r.Meta
		return nil
	})
	return out, err
}

// Filter selects messages in List. From and To match a case-insensitive
// substring of the sender or of any recipient. State matches exactly; empty
// means every state but "deleted". Limit > 0 caps the result.
type Filter struct {
	From  string
	To    string
	State string
	Limit int
}

func (f Filter) match(m *Meta) bool {
	if f.State == "" && m.State == StateDeleted || f.State != "" && m.State != f.State {
		return false
	}
	if f.From != "" && !strings.Contains(strings.ToLower(m.From), strings.ToLower(f.From)) {
		return false
	}
	if f.To == "" {
		return true
	}
	for _, t := range m.To {
		if strings.Contains(strings.ToLower(t), strings.ToLower(f.To)) {
			return true
		}
	}
	return false
}

// List returns the messages that match f, newest first (by Received, then ID).
func (s *Store) List(f Filter) ([]Meta, error) {
	var out []Meta
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktMeta).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, string(k))
			if err != nil || r == nil || r.Purged || !f.match(&r.Meta) {
				return err
			}
			out = append(out, r.Meta)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.After(out[j].Received)
		}
		return out[i].ID > out[j].ID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, err
}

// Stats returns how many messages the quarantine holds (every state but
// deleted; purged ones excluded) and the sum of their sizes, whether or not
// their bodies have arrived here yet.
func (s *Store) Stats() (messages, bytes int64) {
	_ = s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktInfo).Get(keyStats); len(v) == 16 {
			messages, bytes = int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
		}
		return nil
	})
	return messages, bytes
}

// Purge applies retention: it removes, on this node only, the messages
// received (origin's stamp) before olderThan. Every node purges by the same
// rule, so this is not an event. A tombstone stays for each, so that its late
// events are ignored and it is never fetched again; messages that arrive later
// by replication and are already older than the latest cut-off become
// tombstones at once. It returns how many messages it purged.
func (s *Store) Purge(olderThan time.Time) (int, error) {
	var ids []string
	err := s.update(func(tx *bolt.Tx) error {
		ids = ids[:0]
		if h := horizon(tx); olderThan.After(h) {
			if err := tx.Bucket(bktInfo).Put(keyHorizon, u64(uint64(olderThan.UnixNano()))); err != nil {
				return err
			}
		}
		var olds []*record
		err := tx.Bucket(bktMeta).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, string(k))
			if err == nil && r != nil && !r.Purged && r.Received.Before(olderThan) {
				olds = append(olds, r)
			}
			return err
		})
		if err != nil {
			return err
		}
		for _, old := range olds { // not inside ForEach: bbolt forbids puts while iterating
			if compacted(tx, old.ID) {
				// Its events are gone here (skipped to a peer's floor): no tombstone needed.
				if err := dropRecord(tx, old); err != nil {
					return err
				}
				ids = append(ids, old.ID)
				continue
			}
			nw := record{Meta: Meta{ID: old.ID, Origin: old.Origin, Seq: old.Seq,
				Size: old.Size, SHA256: old.SHA256, State: old.State, Received: old.Received}, Purged: true}
			if err := putRecord(tx, old, &nw); err != nil {
				return err
			}
			ids = append(ids, old.ID)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("mailstore: purge: %w", err)
	}
	s.removeBodies(ids)
	if len(ids) > 0 {
		s.notify()
	}
	return len(ids), nil
}
