package mailstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// MissingTotals returns how many messages Missing would list and the sum of their
// sizes, without building the list: a node's status reads it (the mail backlog) while
// a joining node may lack tens of thousands of bodies, so only each record's size is
// read (recordSize).
func (s *Store) MissingTotals() (messages, bytes int64, err error) {
	// As Missing: the committed index, without hurrying the journal's index commits.
	err = s.viewCommitted(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bktMeta)
		return tx.Bucket(bktMissing).ForEach(func(k, _ []byte) error {
			v := meta.Get(k)
			if v == nil {
				return nil
			}
			n, err := recordSize(v)
			if err != nil {
				return fmt.Errorf("mailstore: decode %s: %w", k, err)
			}
			messages++
			bytes += n
			return nil
		})
	})
	return messages, bytes, err
}

// sizeKey is how the size field of a record starts in its JSON.
var sizeKey = []byte(`"size":`)

// recordSize returns the size field of the JSON record v. A record is a flat object
// whose only key ending in "size" is size, and an unescaped quote followed by a colon
// only ever closes a key, so the first `"size":` in v is that key; anything else (no
// such key, a value that is not a plain integer) is decoded in full instead.
func recordSize(v []byte) (int64, error) {
	if i := bytes.Index(v, sizeKey); i >= 0 {
		rest := v[i+len(sizeKey):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j > 0 && j < len(rest) && (rest[j] == ',' || rest[j] == '}') {
			if n, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
				return n, nil
			}
		}
	}
	var r struct {
		Size int64 `json:"size"`
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return 0, err
	}
	return r.Size, nil
}
