package fsm

import "fmt"

// apply applies one decoded command at log index idx, filling res. It is
// deterministic and all-or-nothing: every check runs before any change. placed are the
// slots of the values the command carries (FSM.place); nil keeps them in the heap.
func (s *state) apply(cmd Command, idx uint64, res *Result, placed []slot) {
	switch c := cmd.(type) {
	case CreateCluster:
		res.Err = s.createCluster(c)
	case ConfigSet:
		res.Version, res.Err = s.configSet(c, idx, placed)
	case ConfigDelete:
		res.Version, res.Err = s.configDelete(c, idx)
	case AddMember:
		res.CID, res.Err = s.addMember(c)
	case RemoveMember:
		res.Err = s.removeMember(c)
	case SetSuffrage:
		res.Err = s.setSuffrage(c)
	case SetJoinToken:
		res.Err = s.setJoinToken(c)
	case SetEpoch:
		res.Err = s.setEpoch(c)
	case UpdateMember:
		res.Err = s.updateMember(c)
	case RestoreConfig:
		res.Err = s.restoreConfig(c, idx, placed)
	case SetClusterVersion:
		res.Err = s.setClusterVersion(c)
	default:
		// Unreachable: Decode only returns the types above.
		res.Err = fmt.Errorf("%w: %T has no apply rule", ErrUnknownCommand, cmd)
	}
}

// placedAt is placed[i], or value's slot in the heap when nothing was placed.
func placedAt(placed []slot, i int, value []byte, idx uint64) slot {
	if i < len(placed) {
		return placed[i]
	}
	return heapSlot(idx, value) // an entry always has a non-nil value
}

func (s *state) createCluster(c CreateCluster) error {
	if s.cluster != nil {
		return fmt.Errorf("%w: cluster %s (epoch %d)", ErrClusterExists, s.cluster.ID, s.cluster.Epoch)
	}
	if c.ClusterID == "" {
		return fmt.Errorf("%w: CreateCluster: empty cluster id", ErrBadCommand)
	}
	if c.Founder.CID != 1 {
		return fmt.Errorf("%w: CreateCluster: founder cid is %d, must be 1", ErrBadCommand, c.Founder.CID)
	}
	if err := validateMember(c.Founder); err != nil {
		return err
	}
	if c.Founder.Suffrage != Voter {
		return fmt.Errorf("%w: CreateCluster: founder must be a %s", ErrBadCommand, Voter)
	}
	if len(c.ClusterID) > maxNameLen {
		return fmt.Errorf("%w: CreateCluster: cluster id is %d bytes, the limit is %d", ErrBadCommand, len(c.ClusterID), maxNameLen)
	}
	if len(c.CACertPEM) > maxPEMLen || len(c.CAKeyPEM) > maxPEMLen {
		return fmt.Errorf("%w: CreateCluster: CA certificate or key over %d bytes", ErrBadCommand, maxPEMLen)
	}
	if err := validateJoinToken(c.JoinTokenHash, c.JoinTokenSalt); err != nil {
		return err
	}
	s.cluster = &Cluster{
		ID:            c.ClusterID,
		CreatedAt:     c.CreatedAt,
		Epoch:         1,
		CACertPEM:     c.CACertPEM,
		CAKeyPEM:      c.CAKeyPEM,
		JoinTokenSalt: c.JoinTokenSalt,
		JoinTokenHash: c.JoinTokenHash,
		NextCID:       2,
	}
	// Config entries are kept: the founder's data becomes the cluster's.
	founder := c.Founder
	founder.Epoch = 1
	s.members = map[uint64]Member{1: founder}
	return nil
}

// checkVersion compares the entry's current version (0 if absent) with the
// condition; it returns the current version and a conflict error, if any.
func (s *state) checkVersion(key string, ifVersion *uint64) (uint64, error) {
	cur := s.entries[key].version // 0 when absent
	if ifVersion != nil && *ifVersion != cur {
		return cur, fmt.Errorf("%w: key %q is at version %d, expected %d", ErrVersionConflict, key, cur, *ifVersion)
	}
	return cur, nil
}

func (s *state) configSet(c ConfigSet, idx uint64, placed []slot) (uint64, error) {
	if err := ValidateKey(c.Key); err != nil {
		return 0, err
	}
	if err := validateValue(c.Value); err != nil {
		return 0, fmt.Errorf("key %q: %w", c.Key, err)
	}
	if cur, err := s.checkVersion(c.Key, c.IfVersion); err != nil {
		return cur, err
	}
	size := s.bytes + int64(len(c.Key)+len(c.Value))
	if old, ok := s.entries[c.Key]; ok {
		size -= int64(len(c.Key)) + old.size()
	}
	_, tombstoned := s.tombs.byKey[c.Key]
	if tombstoned {
		size -= int64(len(c.Key))
	}
	// A write that does not grow the store passes even over the limit (a
	// restored state may be over a limit lowered since), so it can shrink.
	if size > stateBytesLimit && size > s.bytes {
		return 0, fmt.Errorf("%w: configuration store would be %d bytes, the limit is %d: delete entries first",
			ErrTooLarge, size, stateBytesLimit)
	}
	if tombstoned {
		s.tombs.remove(c.Key)
	}
	s.setEntry(c.Key, placedAt(placed, 0, c.Value, idx))
	s.bytes = size
	return idx, nil
}

// configDelete removes an entry and leaves a tombstone for watchers. It checks
// the key with validateKeySyntax only, so that an entry written before the
// ban on "." and ".." segments can still be removed.
func (s *state) configDelete(c ConfigDelete, idx uint64) (uint64, error) {
	if err := validateKeySyntax(c.Key); err != nil {
		return 0, err
	}
	if cur, err := s.checkVersion(c.Key, c.IfVersion); err != nil {
		return cur, err
	}
	e, ok := s.entries[c.Key]
	if !ok {
		return 0, fmt.Errorf("%w: key %q", ErrNotFound, c.Key)
	}
	s.dropEntry(c.Key)
	s.tombs.add(c.Key, idx)
	s.bytes -= e.size() // the key stays, in the tombstone
	s.bytes -= s.tombs.trim(tombstoneLimit)
	return idx, nil
}

// checkUnique fails with ErrMemberExists if m clashes with a member other than
// the one with CID skip (0: none). Members are visited in CID order so the
// error is the same on every node.
func (s *state) checkUnique(m Member, skip uint64) error {
	for _, o := range s.sortedMembers() {
		if o.CID == skip {
			continue
		}
		if why := conflict(m, o); why != "" {
			return fmt.Errorf("%w: %s", ErrMemberExists, why)
		}
	}
	return nil
}

func (s *state) addMember(c AddMember) (uint64, error) {
	if s.cluster == nil {
		return 0, fmt.Errorf("%w: AddMember %q", ErrNoCluster, c.Member.Name)
	}
	if err := validateMember(c.Member); err != nil {
		return 0, err
	}
	if err := s.checkUnique(c.Member, 0); err != nil {
		return 0, err
	}
	if c.Member.CID != s.cluster.NextCID {
		return s.cluster.NextCID, fmt.Errorf("%w: AddMember %q: cid %d is not the next cid %d",
			ErrBadCommand, c.Member.Name, c.Member.CID, s.cluster.NextCID)
	}
	m := c.Member
	m.Epoch = s.cluster.Epoch
	s.members[m.CID] = m
	s.cluster.NextCID++
	return c.Member.CID, nil
}

func (s *state) removeMember(c RemoveMember) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: RemoveMember %d", ErrNoCluster, c.CID)
	}
	if _, ok := s.members[c.CID]; !ok {
		return fmt.Errorf("%w: cid %d", ErrUnknownMember, c.CID)
	}
	delete(s.members, c.CID)
	return nil
}

func (s *state) setSuffrage(c SetSuffrage) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: SetSuffrage %d", ErrNoCluster, c.CID)
	}
	if !c.Suffrage.Valid() {
		return fmt.Errorf("%w: SetSuffrage: suffrage %q is neither %q nor %q", ErrBadCommand, c.Suffrage, Voter, Nonvoter)
	}
	m, ok := s.members[c.CID]
	if !ok {
		return fmt.Errorf("%w: cid %d", ErrUnknownMember, c.CID)
	}
	m.Suffrage = c.Suffrage
	s.members[c.CID] = m
	return nil
}

func (s *state) setJoinToken(c SetJoinToken) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: SetJoinToken", ErrNoCluster)
	}
	if err := validateJoinToken(c.Hash, c.Salt); err != nil {
		return err
	}
	s.cluster.JoinTokenHash = c.Hash
	s.cluster.JoinTokenSalt = c.Salt
	return nil
}

func (s *state) setEpoch(c SetEpoch) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: SetEpoch %d", ErrNoCluster, c.Epoch)
	}
	if c.Epoch <= s.cluster.Epoch {
		return fmt.Errorf("%w: SetEpoch: epoch %d is not greater than the current epoch %d", ErrBadCommand, c.Epoch, s.cluster.Epoch)
	}
	if len(c.Members) == 0 {
		return fmt.Errorf("%w: SetEpoch: empty member list", ErrBadCommand)
	}
	members := make(map[uint64]Member, len(c.Members))
	for i, m := range c.Members {
		if err := validateMember(m); err != nil {
			return err
		}
		if m.Epoch > c.Epoch {
			return fmt.Errorf("%w: SetEpoch: member %d has epoch %d, beyond the new epoch %d", ErrBadCommand, m.CID, m.Epoch, c.Epoch)
		}
		if m.CID >= s.cluster.NextCID {
			return fmt.Errorf("%w: SetEpoch: cid %d was never handed out (next cid is %d)", ErrBadCommand, m.CID, s.cluster.NextCID)
		}
		if _, dup := members[m.CID]; dup {
			return fmt.Errorf("%w: SetEpoch: cid %d listed twice", ErrBadCommand, m.CID)
		}
		for _, o := range c.Members[:i] {
			if why := conflict(m, o); why != "" {
				return fmt.Errorf("%w: SetEpoch: member %d: %s", ErrBadCommand, m.CID, why)
			}
		}
		members[m.CID] = m
	}
	s.cluster.Epoch = c.Epoch
	s.members = members
	return nil
}

func (s *state) updateMember(c UpdateMember) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: UpdateMember %d", ErrNoCluster, c.Member.CID)
	}
	if err := validateMember(c.Member); err != nil {
		return err
	}
	if _, ok := s.members[c.Member.CID]; !ok {
		return fmt.Errorf("%w: cid %d", ErrUnknownMember, c.Member.CID)
	}
	if c.Member.Epoch > s.cluster.Epoch {
		return fmt.Errorf("%w: UpdateMember %d: epoch %d is beyond the cluster's %d", ErrBadCommand, c.Member.CID, c.Member.Epoch, s.cluster.Epoch)
	}
	if err := s.checkUnique(c.Member, c.Member.CID); err != nil {
		return err
	}
	s.members[c.Member.CID] = c.Member
	return nil
}

// restoreConfig loads entries on a standalone node; all or nothing.
func (s *state) restoreConfig(c RestoreConfig, idx uint64, placed []slot) error {
	if s.cluster != nil {
		return fmt.Errorf("%w: cluster %s: a backup is restored only on a node in no cluster", ErrClusterExists, s.cluster.ID)
	}
	size := s.bytes
	if c.Reset {
		size = 0
	}
	seen := make(map[string]bool, len(c.Entries))
	for _, e := range c.Entries {
		if err := ValidateKey(e.Key); err != nil {
			return err
		}
		if err := validateValue(e.Value); err != nil {
			return fmt.Errorf("key %q: %w", e.Key, err)
		}
		if seen[e.Key] {
			return fmt.Errorf("%w: RestoreConfig: key %q twice", ErrBadCommand, e.Key)
		}
		seen[e.Key] = true
		size += int64(len(e.Key) + len(e.Value))
		if old, ok := s.entries[e.Key]; ok && !c.Reset {
			size -= int64(len(e.Key)) + old.size()
		}
	}
	if size > stateBytesLimit {
		return fmt.Errorf("%w: configuration store would be %d bytes, the limit is %d", ErrTooLarge, size, stateBytesLimit)
	}
	if c.Reset {
		s.entries = map[string]slot{}
		s.spilled, s.inHeap = 0, 0
		s.tombs = newTombstones()
		s.tombs.horizon = idx // every watcher starts over
		s.bytes = 0
	}
	for i, e := range c.Entries {
		if s.tombs.remove(e.Key) {
			s.bytes -= int64(len(e.Key))
		}
		if old, ok := s.entries[e.Key]; ok {
			s.bytes -= int64(len(e.Key)) + old.size()
		}
		sl := placedAt(placed, i, e.Value, idx)
		s.setEntry(e.Key, sl)
		s.bytes += int64(len(e.Key)) + sl.size()
	}
	return nil
}
