package mailstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Body conditions a consistency check reports for a live message.
const (
	// BodyOK: the body file is there with the size of the metadata (and, when
	// verified, its SHA-256).
	BodyOK = "ok"
	// BodyMissing: the body has not reached this node yet (replication fetches it).
	BodyMissing = "missing"
	// BodyNoFile: the index says the body is here, but its file is gone.
	BodyNoFile = "no-file"
	// BodyWrongSize: the body file's size is not the metadata's.
	BodyWrongSize = "wrong-size"
	// BodyCorrupt: the body file's SHA-256 is not the metadata's (verified checks only).
	BodyCorrupt = "corrupt"
)

// CheckBuckets is the number of buckets a CheckDigest splits the messages into, by the
// first byte of SHA-256(id) (as the bodies are sharded on disk).
const CheckBuckets = 256

// checkBatch bounds the records read in one bbolt read transaction: the file checks run
// between transactions, so that a check of a large quarantine never holds one open.
const checkBatch = 2048

// CheckEntry is one live message as a consistency check compares it between nodes:
// everything in it is the same on every node that is in sync.
type CheckEntry struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
	State  string `json:"state"`
	// Body is the condition of the body on this node: BodyOK, BodyMissing, ...
	Body string `json:"body"`
}

// CheckOptions say what a check covers.
type CheckOptions struct {
	// Since skips messages received (origin's stamp) before it: those that retention
	// is about to purge, which nodes purge at slightly different times.
	Since time.Time
	// Verify re-hashes every body file (reading the whole quarantine) instead of
	// comparing its size only.
	Verify bool
	// Bucket, when in 0..CheckBuckets-1, limits the check to that bucket; -1: all.
	Bucket int
	// Entries, if set, receives every entry checked, in ID order within its bucket.
	Entries func(bucket int, e CheckEntry)
	// Progress, if set, is called after each batch with the messages checked so far.
	Progress func(checked int)
}

// CheckDigest summarizes a node's live messages for a comparison between nodes.
type CheckDigest struct {
	// Messages counts the live messages checked; Skipped those older than Since.
	Messages int `json:"messages"`
	Skipped  int `json:"skipped"`
	// Buckets holds the SHA-256 (hex) of each bucket's entries, in ID order.
	Buckets []string `json:"buckets"`
	// SHA256 digests Buckets: equal on two nodes when all their entries are.
	SHA256 string `json:"sha256"`
	// Bad counts the entries whose body is not BodyOK.
	Bad int `json:"bad"`
}

// BucketOf returns the check bucket of message id.
func BucketOf(id string) int {
	h := sha256.Sum256([]byte(id))
	return int(h[0])
}

type checkRec struct {
	id, sha, state string
	size           int64
	haveBody       bool
}

// Check reads every live message (neither deleted nor purged) and the condition of its
// body on disk, and digests them per bucket. It is read-only: a bad body is reported,
// not moved aside (Verify and Scrub do that). Cost: one index read and one stat per
// message; with opts.Verify, also a read of every body.
func (s *Store) Check(ctx context.Context, opts CheckOptions) (CheckDigest, error) {
	hs := make([]hash.Hash, CheckBuckets)
	for i := range hs {
		hs[i] = sha256.New()
	}
	var out CheckDigest
	var after []byte // the last key read
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		var batch []checkRec
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bktMeta).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else if k, v = c.Seek(after); k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
			for ; k != nil && len(batch) < checkBatch; k, v = c.Next() {
				after = append(after[:0], k...)
				if opts.Bucket >= 0 && BucketOf(string(k)) != opts.Bucket {
					continue
				}
				var r record
				if err := decodeRecord(v, &r); err != nil {
					return fmt.Errorf("mailstore: decode %s: %w", k, err)
				}
				if !r.counted() {
					continue
				}
				if r.Received.Before(opts.Since) {
					out.Skipped++
					continue
				}
				batch = append(batch, checkRec{id: r.ID, sha: r.SHA256, state: r.State, size: r.Size, haveBody: r.HaveBody})
			}
			if k == nil {
				after = nil
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		for _, r := range batch {
			e := CheckEntry{ID: r.id, SHA256: r.sha, State: r.state, Body: s.bodyCondition(r, opts.Verify)}
			b := BucketOf(r.id)
			fmt.Fprintf(hs[b], "%s %s %s %s\n", e.ID, e.SHA256, e.State, e.Body)
			if e.Body != BodyOK {
				out.Bad++
			}
			if opts.Entries != nil {
				opts.Entries(b, e)
			}
		}
		out.Messages += len(batch)
		if opts.Progress != nil {
			opts.Progress(out.Messages)
		}
		if after == nil {
			break
		}
	}
	all := sha256.New()
	out.Buckets = make([]string, CheckBuckets)
	for i := range hs {
		out.Buckets[i] = hex.EncodeToString(hs[i].Sum(nil))
		io.WriteString(all, out.Buckets[i])
	}
	out.SHA256 = hex.EncodeToString(all.Sum(nil))
	return out, nil
}

// bodyCondition looks at the body file of r, without changing anything.
func (s *Store) bodyCondition(r checkRec, verify bool) string {
	if !r.haveBody {
		return BodyMissing
	}
	path := s.BodyPath(r.id)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return BodyNoFile
	case err != nil:
		return BodyNoFile
	case fi.Size() != r.size:
		return BodyWrongSize
	}
	if verify {
		ok, err := fileMatches(path, Meta{Size: r.size, SHA256: r.sha})
		if err != nil || !ok {
			return BodyCorrupt
		}
	}
	return BodyOK
}
