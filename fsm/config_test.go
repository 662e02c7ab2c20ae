package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"mail/relay", true},
		{"a/b/c-d_e.f:g@h", true},
		{strings.Repeat("k", MaxKeyLen), true},
		{"", false},
		{strings.Repeat("k", MaxKeyLen+1), false},
		{"has space", false},
		{"tab\there", false},
		{"nl\n", false},
		{"del\x7f", false},
		{"ümlaut", false},
		{"/lead", false},
		{"trail/", false},
		{"a//b", false},
		{"/", false},
		// Keys are safe relative file paths: no "." or ".." segment.
		{".", false},
		{"..", false},
		{"./a", false},
		{"a/.", false},
		{"a/./b", false},
		{"../a", false},
		{"a/..", false},
		{"a/../b", false},
		{".a", true},
		{"a.", true},
		{"...", true},
		{"a/.../b", true},
		{"a/..b/.c", true},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		if tt.ok && err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
		}
	}
}

func TestConfigSet(t *testing.T) {
	// Each case runs on a fresh FSM holding "k" at version 1 (log index 1).
	tests := []struct {
		name    string
		cmd     ConfigSet
		err     error
		version uint64 // Result.Version
		stored  uint64 // version of cmd.Key afterwards (0: absent)
	}{
		{"unconditional overwrite", ConfigSet{Key: "k", Value: []byte("v2")}, nil, 2, 2},
		{"unconditional new", ConfigSet{Key: "n", Value: []byte("x")}, nil, 2, 2},
		{"if absent, absent", ConfigSet{Key: "n", Value: []byte("x"), IfVersion: u64(0)}, nil, 2, 2},
		{"if absent, present", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(0)}, ErrVersionConflict, 1, 1},
		{"if version matches", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(1)}, nil, 2, 2},
		{"if version stale", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(7)}, ErrVersionConflict, 1, 1},
		{"if version, absent", ConfigSet{Key: "n", Value: []byte("x"), IfVersion: u64(1)}, ErrVersionConflict, 0, 0},
		{"empty value", ConfigSet{Key: "n", Value: []byte{}}, nil, 2, 2},
		{"nil value", ConfigSet{Key: "n"}, nil, 2, 2},
		{"max value", ConfigSet{Key: "n", Value: make([]byte, MaxValueLen)}, nil, 2, 2},
		{"value too large", ConfigSet{Key: "n", Value: make([]byte, MaxValueLen+1)}, ErrTooLarge, 0, 0},
		{"invalid key", ConfigSet{Key: "a//b", Value: []byte("x")}, ErrInvalidKey, 0, 0},
		{"empty key", ConfigSet{Key: "", Value: []byte("x")}, ErrInvalidKey, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.must(ConfigSet{Key: "k", Value: []byte("v1")})
			res := h.apply(tt.cmd)
			wantErr(t, res.Err, tt.err)
			if res.Version != tt.version {
				t.Errorf("Result.Version = %d, want %d", res.Version, tt.version)
			}
			e, ok := h.f.mustGet(tt.cmd.Key)
			if tt.stored == 0 {
				if ok && tt.cmd.Key != "k" {
					t.Errorf("key %q exists after failed set", tt.cmd.Key)
				}
				return
			}
			if !ok || e.Version != tt.stored {
				t.Fatalf("Get(%q) = %+v, %v; want version %d", tt.cmd.Key, e, ok, tt.stored)
			}
			if tt.err == nil && !bytes.Equal(e.Value, tt.cmd.Value) {
				t.Errorf("value = %q, want %q", e.Value, tt.cmd.Value)
			}
			if tt.err == nil && e.Value == nil {
				t.Errorf("stored value is nil, want non-nil")
			}
			if tt.err != nil {
				if e, _ := h.f.mustGet("k"); string(e.Value) != "v1" || e.Version != 1 {
					t.Errorf("failed set changed k: %+v", e)
				}
			}
		})
	}
}

func TestConfigDelete(t *testing.T) {
	// Each case runs on a fresh FSM holding "k" at version 1.
	tests := []struct {
		name    string
		cmd     ConfigDelete
		err     error
		version uint64
		gone    bool
	}{
		{"unconditional", ConfigDelete{Key: "k"}, nil, 2, true},
		{"matching version", ConfigDelete{Key: "k", IfVersion: u64(1)}, nil, 2, true},
		{"stale version", ConfigDelete{Key: "k", IfVersion: u64(5)}, ErrVersionConflict, 1, false},
		{"if absent, present", ConfigDelete{Key: "k", IfVersion: u64(0)}, ErrVersionConflict, 1, false},
		{"absent", ConfigDelete{Key: "n"}, ErrNotFound, 0, false},
		{"absent, if absent", ConfigDelete{Key: "n", IfVersion: u64(0)}, ErrNotFound, 0, false},
		{"absent, if version", ConfigDelete{Key: "n", IfVersion: u64(1)}, ErrVersionConflict, 0, false},
		{"invalid key", ConfigDelete{Key: "/k"}, ErrInvalidKey, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.must(ConfigSet{Key: "k", Value: []byte("v1")})
			res := h.apply(tt.cmd)
			wantErr(t, res.Err, tt.err)
			if res.Version != tt.version {
				t.Errorf("Result.Version = %d, want %d", res.Version, tt.version)
			}
			_, ok := h.f.mustGet("k")
			if ok == tt.gone {
				t.Errorf("k present = %v, want %v", ok, !tt.gone)
			}
		})
	}
}

func TestConfigWorksWithoutAndWithCluster(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "before", Value: []byte("1")})
	h.must(createCmd())
	h.must(ConfigSet{Key: "after", Value: []byte("2")})
	got := h.f.mustList("")
	if len(got) != 2 || got[0].Key != "after" || got[1].Key != "before" {
		t.Fatalf("List = %+v", got)
	}
}

func TestListPrefixAndCopies(t *testing.T) {
	h := newHarness(t)
	for _, k := range []string{"mail/b", "mail/a", "mailx", "spam/a"} {
		h.must(ConfigSet{Key: k, Value: []byte(k)})
	}
	keys := func(es []Entry) string {
		var ks []string
		for _, e := range es {
			ks = append(ks, e.Key)
		}
		return strings.Join(ks, ",")
	}
	for prefix, want := range map[string]string{
		"":      "mail/a,mail/b,mailx,spam/a",
		"mail/": "mail/a,mail/b",
		"mail":  "mail/a,mail/b,mailx",
		"none":  "",
	} {
		if got := keys(h.f.mustList(prefix)); got != want {
			t.Errorf("List(%q) = %s, want %s", prefix, got, want)
		}
	}
	if l := h.f.mustList("none"); l == nil {
		t.Errorf("List of nothing is nil, want empty")
	}
	// Readers get copies: scribbling on them does not change the state.
	e, _ := h.f.mustGet("mail/a")
	e.Value[0] = 'X'
	h.f.mustList("")[0].Value[0] = 'Y'
	if e, _ := h.f.mustGet("mail/a"); string(e.Value) != "mail/a" {
		t.Fatalf("state changed through a reader's copy: %q", e.Value)
	}
}

func TestVersionIsLogIndex(t *testing.T) {
	h := newHarness(t)
	h.idx = 41
	res := h.must(ConfigSet{Key: "k", Value: []byte("v")})
	if res.Version != 42 {
		t.Fatalf("Version = %d, want 42", res.Version)
	}
	// A CAS chain: each write names the version it read.
	for i := 0; i < 3; i++ {
		e, _ := h.f.mustGet("k")
		res := h.must(ConfigSet{Key: "k", Value: []byte("v"), IfVersion: u64(e.Version)})
		if res.Version != h.idx {
			t.Fatalf("Version = %d, want %d", res.Version, h.idx)
		}
	}
	if got := h.f.AppliedIndex(); got != h.idx {
		t.Fatalf("AppliedIndex = %d, want %d", got, h.idx)
	}
}

func TestResetEmptiesState(t *testing.T) {
	h := withCluster(t, 2)
	h.must(ConfigSet{Key: "a", Value: []byte("1")})
	f := h.f
	f.Reset()
	if _, ok := f.mustGet("a"); ok || f.AppliedIndex() != 0 || f.Cluster() != nil || len(f.mustList("")) != 0 {
		t.Fatalf("state after Reset: applied=%d list=%v", f.AppliedIndex(), f.mustList(""))
	}
}
